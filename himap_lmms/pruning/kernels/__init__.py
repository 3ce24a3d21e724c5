"""The torch code of the built-in methods' rules: one module per method that needs its own, named after the
method's module in :mod:`himap_lmms.pruning` whose spec refers to it lazily (HiMAP's and FastV's attention scores,
shared, are in :mod:`himap_lmms.pruning.scoring`)."""
