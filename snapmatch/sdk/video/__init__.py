"""Video: frame sources, the motion gate, voting, keyframe selection and the watch loop."""
