"""``resumable ui``: a web page of runs, step graphs, checkpoints and live progress.

- :mod:`._app` — the Starlette app (pages, server-sent events, actions);
- :mod:`._cloud` and :mod:`._folder` — the two run sources: a serverless deployment's run
  documents, or the in-process checkpoints in a folder or bucket;
- :mod:`._graph` and :mod:`._timeline` — the step graph and the Gantt chart, as SVG;
- :mod:`._values` — the checkpoint browser's value summaries and image thumbnails;
- :mod:`._security` — Host, same-origin and CSRF checks;
- :mod:`._data` — the only module that imports the rest of the library.

The command is :mod:`resumable.cli._ui`. Importing this package imports nothing of the
web stack (an optional extra, ``ui``).
"""
