"""The bundled demo: a synthetic two-camera recording with a known layout, a recorded reasoning
trace per demo question, and the README's main job (``python -m ros_vilasr.demo.run``)."""
