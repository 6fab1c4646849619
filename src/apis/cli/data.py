"""``apis data``: check a COCO file, import a dataset's folder, write the synthetic set, pseudo boxes from a
detector."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from apis.cli.common import console, fail, progress_bars

data_app = typer.Typer(no_args_is_help=True, help="Dataset tools: check a COCO file, import mask folders or "
                       "label images, build the synthetic set.")


@data_app.command("check")
def data_check(path: Path = typer.Argument(..., help="COCO instances json"),
               images: Path | None = typer.Option(None, help="image folder (default: next to the json)")) -> None:
    """Validate a COCO file and its images; print a summary or every problem found."""
    from apis.data.coco import DatasetError, format_summary, load_coco, summarize

    try:
        ds = load_coco(path, images)
    except DatasetError as e:
        fail(str(e))
    for table in format_summary(summarize(ds)):
        console.print(table)


@data_app.command("import")
def data_import(src: Path = typer.Argument(..., help="the dataset's folder"),
                out: Path = typer.Argument(..., help="output folder, new or empty, outside SRC (train/, val/, "
                                           "apis.yaml)"),
                layout: str | None = typer.Option(None, help="the format: mask-folders, coco, labelme, voc-seg, "
                                                  "cellpose, yolo-seg, yolo-det, label-images, side-by-side (default: "
                                                  "the first that claims SRC; an unknown name lists them)"),
                images: Path | None = typer.Option(None, help="label-images: the image folder (default: found in SRC)"),
                labels: Path | None = typer.Option(None, help="label-images: the label folder (default: found in SRC)"),
                label_name: str | None = typer.Option(
                    None, help="label file's stem from the image's, e.g. '{stem}_mask' or 'man_seg{digits}' "
                    "(default: the template that pairs the most files)"),
                image_pattern: str | None = typer.Option(
                    None, help="images and labels side by side in SRC: the images' glob, one * for the shared stem, "
                    "e.g. '*_img.png' (with --label-pattern; default: told apart by their suffix where unambiguous)"),
                label_pattern: str | None = typer.Option(None, help="the labels' glob beside --image-pattern, e.g. "
                                                         "'*_mask.png'"),
                category: str | None = typer.Option(None, help="the one category's name (default: object)"),
                categories: Path | None = typer.Option(
                    None, help="YAML mapping globs over mask/label paths (relative to SRC) to category names; with "
                    "--class-from-value, class ids to names. A glob that matches no file is refused"),
                ignore_values: str | None = typer.Option(
                    None, help="void label values, neither object nor background: comma list of integers or #RRGGBB "
                    "colours, or none (default: 255 in 8-bit and palette labels, #e0e0c0 and #ffffff in colour "
                    "labels, none in 16-bit)"),
                class_from_value: bool | None = typer.Option(
                    None, "--class-from-value/--no-class-from-value",
                    help="label values are class × 1000 + k (Cityscapes instanceIds): the category from value "
                    "// 1000; values under 1000 are crowd regions (iscrowd 1) of classes with objects, left out "
                    "(stuff) for classes without. Unsaid, 16-bit labels that look like such ids are refused; "
                    "--no-class-from-value reads every value as an object"),
                mask_threshold: int = typer.Option(
                    128, help="a binary mask's object: grey value at or above this (8-bit scale; ×257 for 16-bit "
                    "masks; a 0/1 mask: 1)"),
                exif: str = typer.Option("auto", help="masks of an image with an EXIF orientation were drawn on its "
                                         "stored pixels (stored) or on it as shown (shown); auto: told by their size, "
                                         "refused where both sizes are equal"),
                val_fraction: float = typer.Option(0.2, help="share of images in val/ (0: train/ only)"),
                seed: int = typer.Option(0, help="seed of the split and of --max-images' sample"),
                max_images: int | None = typer.Option(None, help="import a seeded sample of this many images"),
                max_pixels: int = typer.Option(2**27, help="largest image (width × height) read; raise it for "
                                               "genuine huge images"),
                on_error: str = typer.Option("refuse", help="refuse: write nothing if any problem; skip: leave every "
                                             "image with a problem out whole and list it")) -> None:
    """Turn a folder of images and instance masks into validated COCO files with RLE masks and tight boxes:
    every mask pixel is what the source means, or the import writes nothing and names the file and the fix."""
    from apis.data.importers import import_dataset

    with progress_bars() as update:
        result = import_dataset(src, out, layout, images_dir=images, labels_dir=labels, label_name=label_name,
                                image_pattern=image_pattern, label_pattern=label_pattern, category=category,
                                categories_file=categories, ignore_values=ignore_values,
                                class_from_value=class_from_value, mask_threshold=mask_threshold, exif=exif,
                                val_fraction=val_fraction, seed=seed, max_images=max_images, max_pixels=max_pixels,
                                on_error=on_error, progress=lambda d, t: update("images", d, t))
    for problem in result.skipped:
        console.print("[yellow]skipped:[/yellow]", escape(problem))
    for path in result.left_out:
        console.print("[yellow]left out whole:[/yellow]", escape(path))
    console.print(f"format: {result.layout}")
    for note in result.notes:
        console.print(escape(note))
    for split, path in result.paths.items():
        console.print(f"{split}: {path} ({result.images[split]} images, {result.instances[split]} instances)")
    console.print(f"categories: {', '.join(result.categories)}")
    if result.sizes is not None:
        for line in result.sizes.lines():
            console.print(escape(line))
    console.print(f"run config: {result.config}  (apis compare runs/NAME --config {result.config})")


@data_app.command("synthetic")
def data_synthetic(out: Path = typer.Argument(..., help="output folder (train/ and val/ are written)"),
                   seed: int = typer.Option(0, help="random seed: same seed, same files"),
                   size: int = typer.Option(160, help="image side in pixels"),
                   train_images: int = typer.Option(240), val_images: int = typer.Option(120),
                   mask_format: str = typer.Option("rle", help="rle or polygon")) -> None:
    """Write the built-in synthetic COCO dataset (deterministic per seed)."""
    from apis.data.synthetic import SyntheticConfig, generate

    cfg = SyntheticConfig(seed=seed, image_size=size, train_images=train_images, val_images=val_images,
                          mask_format=mask_format)
    with progress_bars() as update:
        paths = generate(out, cfg, progress=lambda d, t: update("images", d, t))
    for split, p in paths.items():
        console.print(f"{split}: {p}")


@data_app.command("pseudo-boxes")
def data_pseudo_boxes(detector: Path = typer.Option(..., help="trained model (model_final.pt of apis train)"),
                      images: Path = typer.Option(..., help="COCO json of the pool's images (GT masks: simulation)"),
                      out: Path = typer.Option(..., help="COCO json to write: the box-free pool (data.train)"),
                      score: float = typer.Option(0.3, help="keep detections scoring at least this"),
                      iou: float = typer.Option(0.5, help="box IoU a pseudo box needs to match a GT instance"),
                      device: str = typer.Option("auto"), batch_size: int = typer.Option(8)) -> None:
    """Box-free APIS: the pool's boxes from a detector. With GT masks in IMAGES each pseudo box is matched
    to a GT instance by IoU and answered from its mask; false positives are dropped, misses counted."""
    from apis.data.coco import DatasetError, load_coco
    from apis.pseudo_boxes import PseudoBoxError, pseudo_box_dataset, write_pseudo_boxes
    from apis.report.tables import pseudo_box_table
    from apis.train import load_model, pick_device

    try:
        ds = load_coco(images)
        dev = pick_device(device)
        model = load_model(detector, dev)
        with progress_bars() as update:
            r = pseudo_box_dataset(model, ds, dev, score, iou, batch_size, detector=str(detector),
                                   progress=lambda d, t: update("detect", d, t))
    except (DatasetError, PseudoBoxError, FileNotFoundError) as e:
        fail(str(e))
    write_pseudo_boxes(r, out)
    if not r.simulated:
        console.print(f"{out}: {r.pool_size} pseudo boxes (score >= {score:g}) from {len(ds.images)} images; "
                      "no GT masks in the input, so nothing was matched: people answer the points (--people)")
        return
    console.print(pseudo_box_table(r, score, iou))
    console.print(f"{out}: pool of {r.pool_size} matched pseudo boxes; {r.false_positives} false positives dropped; "
                  f"{r.missed} GT instances missed (ids in info.apis_missed_gt_ids)")
