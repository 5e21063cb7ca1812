"""The two-stage Follow-Your-Pose model, its trainers and the generation pipeline."""
