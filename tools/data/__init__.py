"""Datasets: readers (MPII JSON, COCO keypoints, CMU Panoptic), sharded storage, augmentation and targets.

Every reader returns :class:`tools.data.sample.Sample` records (images referenced by path); shards store
them with the image bytes; ``tools.data.augment`` turns them into network inputs and codec targets.
"""
