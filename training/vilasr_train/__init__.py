"""ViLaSR training stages on the ROS-free core of ros_vilasr: SFT, reflective rejection sampling, GRPO."""
