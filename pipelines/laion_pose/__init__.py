"""The LAION-Pose builder: LAION parquet metadata in, pose-annotated WebDataset shards out.

Stages, one module each (none of them imports Ray; :mod:`.job` wires them):

- :mod:`.inputs`: find the parquet files, check the columns, split the rows
  into deterministic shards and read one shard's rows back;
- :mod:`.url_policy`: refuse ``file://`` and private/loopback/link-local hosts;
- :mod:`.fetcher`: fetch one image under that policy (every redirect hop
  checked, the checked address connected to, a deadline and a byte cap);
- :mod:`.download`: one shard fetched and put through img2dataset's resizer,
  its per-sample errors mapped to :data:`datasets.laion_pose.STATUSES`
  (:mod:`.resizer` guards its decoder);
- :mod:`.pose_stage`: :class:`.pose_stage.PoseAnnotator`, the callable pose
  stage (estimator, keep rule, annotation, skeleton image);
- :mod:`.writer`: one LAION-Pose shard through :mod:`datasets.shards`;
- :mod:`.workers`: the bodies of the download and pose actors, and how many
  of each the cluster holds;
- :mod:`.job`: the Ray job; :mod:`.cli`: the command line.
"""
