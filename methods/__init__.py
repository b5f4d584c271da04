"""Method plugins shipped with stbench (registered lazily in ``stbench.plugins``)."""
