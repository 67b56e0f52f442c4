"""How the models are trained, in plain torch (no Ray): their configs, losses, training steps,
optimisation and checkpoints. The epoch loop and the Ray run contexts that drive these are in
``jingle.pipelines``; the modules being trained are in ``jingle.models``."""
