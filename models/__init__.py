"""The neural networks and what builds them from a config: the fusion cascade and its parts
(blocks, masking, the compositional and adaptive-window agents, the novelty measure), the
codecs and the pointer network with its decoding. Plain torch; how they are trained is in
``jingle.training``, how their outputs are judged in ``jingle.evaluation``."""
