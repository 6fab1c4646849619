"""Readers of the formats labelling tools export, one module per format, each exposing ``FORMAT`` (a
:class:`apis.data.sources.Format`) and registered in :mod:`apis.data.importing.registry`: ``coco``
(:mod:`.coco_json`), ``labelme``, ``voc-seg``, ``cellpose``, ``yolo-seg`` and ``yolo-det`` (layout shared in
:mod:`.yolo`). Shared pieces: :mod:`.files` (finding and pairing files), :mod:`.polygons` (COCO's polygon
convention), :mod:`.rasters` (label rasters), :mod:`.npy` (Cellpose's pickled arrays without running pickled
code). Each looks for files the others do not have (a COCO json's "images" and "annotations", LabelMe's
"shapes", SegmentationObject/, X_seg.npy or X_masks.png beside X, a YOLO class file with label lines of more
than or of exactly 5 values), so among themselves their order does not matter; they go before the looser
``label-images`` and ``side-by-side`` layouts, which would also claim YOLO's images/ + labels/ and VOC's
JPEGImages/ + SegmentationObject/.
"""
