"""Video decoding, frame sampling and perturbations."""

from rrpo.video.io import read_frames, sample_frame_indices, write_video

__all__ = ["read_frames", "sample_frame_indices", "write_video"]
