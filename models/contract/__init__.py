"""The model contract: what the worker, training and export agree on, importable without torch or
faust.

- :mod:`models.contract.labels`: the class labels, in logits-column order.
- :mod:`models.contract.protocol`: the ``Classifier`` protocol the worker calls.
- :mod:`models.contract.logits`: softmax, from logits to class probabilities.
- :mod:`models.contract.manifest`: ``manifest.json`` of an exported model (read, write, verify).
- :mod:`models.contract.classifier`: the ONNX runtime (onnxruntime + tokenizers) of one graph.
- :mod:`models.contract.routing`: several graphs behind a script rule (the committed artifact).
- :mod:`models.contract.mixed`: the clause split and the mixed-sentiment rule.
- :mod:`models.contract.text`: text hygiene shared by events and the runtime.
- :mod:`models.contract.errors`: the one error root, :class:`PortraitError`, and its classes.
"""
