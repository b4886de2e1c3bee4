"""The rewrites, one pass per module, and what they stand on (docs/ARCHITECTURE.md lists every module).

Where to start:

- compile a model from Python: ``pipelines.compile_model`` (the front door; ``python -m passes.apply``
  is the command line around it);
- write a pass: subclass ``passes.rewrite.NodeRewrite`` (one node at a time) or ``passes.base.Pass``,
  declare ``passes.base.Option``s, decorate it with ``passes.registry.register_pass`` (README,
  "Writing a pass");
- run passes on an in-memory ``onnx_graphsurgeon`` graph yourself: ``passes.manager.PassManager``.

Nothing is imported here: the registry (``passes/registry.py``) finds the pass modules with ``ast`` and imports
them on first use.
"""
