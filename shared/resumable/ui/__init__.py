"""``resumable ui``: a web page of runs, step graphs, checkpoints and live progress.

- :mod:`.app` — the Starlette app (pages, server-sent events, actions);
- :mod:`.cloud` and :mod:`.folder` — the two run sources: a serverless deployment's run
  documents, or the in-process checkpoints in a folder or bucket;
- :mod:`.graph` and :mod:`.timeline` — the step graph and the Gantt chart, as SVG;
- :mod:`.values` — the checkpoint browser's value summaries and image thumbnails;
- :mod:`.security` — Host, same-origin and CSRF checks;
- :mod:`._data` — the only module that imports the rest of the library.

Importing this package imports nothing of the web stack (an optional extra, ``ui``).
"""
