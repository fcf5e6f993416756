"""``bench report``: everything a report shows, read from the store only.

The modules form layers; each imports only modules above it in this list (lower layers), never one
below it, not even lazily inside a function (``tests/test_report_layers.py`` checks it):

1. ``stats``      pure statistics: cluster and two-level bootstraps, sign test, Holm, ``ALPHA``
2. ``data``       everything read from the store: the SQL queries, ``check_filters``, reward directions
3. ``rows``       the report rows (one per arm of training replicates): means, win rates, CIs, p and Holm
   ``runs``       the runs shown: their order, the names a reader sees, their provenance
   ``summary``    ranking against base, cost of each run, score histograms
   ``categories`` win rates per prompt category and attribute
   ``diversity``  how varied a run's images of one prompt are, against base
   ``curves``     win rates over training steps (intermediate checkpoints) and the over-optimisation flag
   ``frontier``   the compute-matched frontier: win rate against cost per image, beside best_of_n
   ``papers``     published numbers of catalogued checkpoints beside ours (reads ``bench.checkpoints``)
   ``trainlog``   training curves from ``train_log``, per method family
4. ``plots``      matplotlib drawing;  ``charts`` which charts a report has;  ``grids`` image grids
5. ``document``   one ``Document`` gathering all of the above
6. ``fmt``        number, percent, CI and p formatting, Markdown and HTML escaping
   ``content``    what md and html both say, as plain text (headers, cells, notes, provenance)
7. ``render_md``, ``render_html``, ``render_data`` (json, csv): a Document as text
8. ``writer``     ``FORMATS`` and ``write``: the one entry point, writing the file and its ``<name>_files/``

This file imports nothing, so that using a lower layer never loads the higher ones.
"""
