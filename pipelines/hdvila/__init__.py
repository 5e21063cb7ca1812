"""The HD-VILA clip builder: metadata spans -> frame-exact mp4 clips in WebDataset shards (see :mod:`datasets.clips`).

- :mod:`~pipelines.hdvila.config`: the job's configs;
- :mod:`~pipelines.hdvila.metadata`: reading metadata, captions and the video folder;
- :mod:`~pipelines.hdvila.planning`: shards of planned clips and the rejections that need no video;
- :mod:`~pipelines.hdvila.probe`, :mod:`~pipelines.hdvila.cutting`, :mod:`~pipelines.hdvila.encoding`: timing,
  cutting and encoding one span;
- :mod:`~pipelines.hdvila.sources`: local, fsspec and yt-dlp sources;
- :mod:`~pipelines.hdvila.stages`: the :class:`ClipCutter` stage; :mod:`~pipelines.hdvila.shard`: one shard;
- :mod:`~pipelines.hdvila.job`: the Ray job (its command line is :mod:`pipelines.build_hdvila_clips`).
"""
