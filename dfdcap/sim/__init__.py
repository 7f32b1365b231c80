"""sim stage of dfdcap: a virtual rig with ground truth.

clock.py  SimClock (offset, drift, jitter; the true device -> host model)
scene.py  ray-cast scenes of textured planes, boxes and spheres (optionally moving)
render.py occlusion-aware thin-lens defocus, sensor noise, random focus stacks for pretraining
sensor.py SimSensor: 640x480 color + registered uint16 depth, Xtion / D405 error models
phone.py  SimPhone: a Galaxy-S7-like camera sweeping focus, with per-frame metadata
rig.py    RigConfig + SimRig: both devices at a known pose, one scene, truth_rig()
boards.py BoardSpec + write_board_pairs: checkerboard / ChArUco image pairs with true poses
"""
