"""What ``--report DIR`` writes, and the pieces that compute it.

    snapshot.py    a cheap record of a graph's nodes (name, op, input and output names)
    regions.py     removed/added nodes between two snapshots, grouped into rewrites
    canonical.py   a rewrite printed with structure-only names, so identical ones print alike
    grouping.py    identical rewrites grouped ("x60 identical, showing 1")
    recorder.py    the pass manager's observer: regions and provenance per changed pass
    provenance.py  node metadata "pass" / "pass_index" stamped on export
    schema.py      report.json's JSON Schema (report_schema.json) and its version
    html.py        index.html: one self-contained page
"""
