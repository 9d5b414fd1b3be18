"""SAM2's video model as a tracker: points, a box or a mask on the first frame give a mask for
every frame (``serve --sam2-checkpoint DIR``).

The model is transformers' ``Sam2VideoModel``, loaded from a local directory (never a hub): the
SAM2 checkpoints transformers converts (facebook/sam2.1-hiera-tiny, -small, -base-plus, -large),
saved with ``save_pretrained``. Meta's ``sam2`` package and transformers' SAM2 processors both
need torchvision, which framecast's torch builds do not carry, so framecast prepares the model's
inputs itself, as those processors do: each frame resized to the model's square input and
normalised with ImageNet's mean and deviation; prompts scaled to that square; the predicted
masks scaled back to the frame and thresholded at 0. Frames stream through one at a time (the
session keeps its memory of past frames, not the frames themselves). Tested with transformers
5.25 (``Sam2VideoInferenceSession``'s ``add_point_inputs``, ``add_mask_inputs``,
``obj_with_new_inputs`` and ``processed_frames``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from framecast.engine.errors import InvalidInput
from framecast.engine.masks.trackers import Point, Track, Tracker, TrackerKind

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OBJECT = 1  # the one object a prompt marks


class Sam2Tracker(Tracker):
    kind = TrackerKind.SAM2

    def __init__(self, model, device: torch.device):
        self.model, self.device = model, device
        self.size = int(model.config.image_size)
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(3, 1, 1)

    @classmethod
    def load(cls, directory: str | Path, device: torch.device | str = "cpu") -> Sam2Tracker:
        """The model in a local directory; InvalidInput naming ``sam2_checkpoint`` when it is not one."""
        from transformers import Sam2VideoModel

        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise InvalidInput("sam2_checkpoint", str(directory), "is not a SAM2 video model directory (no config.json); "
                               "save one with transformers' Sam2VideoModel.save_pretrained")  # fmt: skip
        try:
            model = Sam2VideoModel.from_pretrained(directory, local_files_only=True)
        except (OSError, ValueError) as error:
            raise InvalidInput("sam2_checkpoint", str(directory), f"does not load as a Sam2VideoModel: {error}") from None
        device = torch.device(device)
        return cls(model.to(device).eval().requires_grad_(False), device)

    def _pixels(self, frame: np.ndarray) -> torch.Tensor:
        """[H, W, 3] uint8 -> [3, S, S] float, resized (bilinear) and normalised as SAM2 expects."""
        image = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        image = torch.nn.functional.interpolate(image, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (image[0] - self.mean) / self.std

    def _prompt(self, session, first: np.ndarray | None, points: list[Point], height: int, width: int) -> None:
        index = session.obj_id_to_idx(OBJECT)
        if points:
            scale = torch.tensor([self.size / width, self.size / height])
            coords = torch.tensor([[p.x, p.y] for p in points], dtype=torch.float32) * scale
            labels = torch.tensor([0 if p.negative else 1 for p in points], dtype=torch.int32)
            session.add_point_inputs(index, 0, {"point_coords": coords[None, None], "point_labels": labels[None, None]})
        else:
            mask = torch.from_numpy(first).float()[None, None].to(self.device)
            mask = torch.nn.functional.interpolate(mask, size=(self.size, self.size), mode="bilinear", align_corners=False,
                                                   antialias=True)  # fmt: skip
            session.add_mask_inputs(index, 0, (mask >= 0.5).float())
        session.obj_with_new_inputs = [OBJECT]

    @torch.no_grad()
    def track(self, frames: np.ndarray, first: np.ndarray | None, points: list[Point] = ()) -> Track:
        """frames: [F, H, W, 3] uint8; ``points`` on frame 0, or ``first``, its region [H, W] bool."""
        from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

        count, height, width = frames.shape[:3]
        session = Sam2VideoInferenceSession(video_height=height, video_width=width, inference_device=self.device,
                                            inference_state_device=self.device, video_storage_device=self.device,
                                            dtype=torch.float32)  # fmt: skip
        masks, lost = np.zeros((count, height, width), bool), []
        for index in range(count):
            session.add_new_frame(self._pixels(frames[index]), index)
            if index == 0:
                self._prompt(session, first, list(points), height, width)
            output = self.model(inference_session=session, frame_idx=index)
            logits = torch.nn.functional.interpolate(output.pred_masks[:1].float(), size=(height, width), mode="bilinear",
                                                     align_corners=False)  # fmt: skip
            masks[index] = (logits[0, 0] > 0).cpu().numpy()
            session.processed_frames.pop(index - 1, None)  # its features are in the session's memory already
            if not masks[index].any():
                lost.append(index)
        return Track(masks, lost)
