"""Learning: from labeled traffic to a candidate model, registered and ready to be tested.

* :mod:`~cl_plugin.learning.labels`: routing labels from ratings, corrections and annotations, and the
  replay buffer;
* :mod:`~cl_plugin.learning.training_data`: labeled, deduplicated, sanitized training sets;
* :mod:`~cl_plugin.learning.points`: a decision point's labeled rows and the options a graph declares;
* :mod:`~cl_plugin.learning.router`: :class:`MetaRouter`, the learned decision-point model;
* :mod:`~cl_plugin.learning.rag`: :class:`RagIndex`, the retrieval index corrections feed;
* :mod:`~cl_plugin.learning.modelset`: the models one retraining cycle trains together;
* :mod:`~cl_plugin.learning.registry`: :class:`ModelRegistry`, versions, aliases and verified artifacts;
* :mod:`~cl_plugin.learning.retraining`: :class:`IncrementalRetrainingPipeline`, the original design's
  retraining API.

Learning may import drift, analysis, capture, the store and privacy, never a later stage. Its modules load
scikit-learn, so nothing is imported here: import the module you need.
"""
