"""The client side of masks from a box, points or a frame-0 mask, without a server: the requests
(``mask_prompt`` instead of ``mask_id``, one of them), the options and their value types, the
progress lines of ``notice`` and ``tracked`` events, and the commands run against fakes of the
gRPC layer (``--tracked-mask`` downloaded, a notice said once in an edit)."""

from __future__ import annotations

import io

import pytest

from framecast.client import cli
from framecast.client.cli.args import CliError
from framecast.client.cli.masks import MaskInput, box_spec, dashed_values, points_spec
from framecast.client.progress import JobProgress
from framecast.client.requests import mask_prompt, plan_request, propagate_request, train_request
from framecast.v1 import framecast_pb2 as pb

from .conftest import RecordingStub, ServerStream

BOX = (10, 20.5, 30, 40)


# ---- requests -------------------------------------------------------------------------------


def test_a_box_points_or_frame0_mask_is_sent_as_mask_prompt_instead_of_mask_id():
    request = train_request("a", "sha256:s", prompt="p", box=BOX)
    assert request.mask_prompt == pb.MaskPrompt(box=pb.Box(x=10, y=20.5, width=30, height=40))
    assert request.mask_id == "" and request.prompt == "p"
    request = propagate_request("a", "sha256:s", edited_first_frame_id="sha256:e", prompt="p", tracker="sam2",
                                points=[(5, 6), (7.5, 8, False), (1, 2, True), pb.Point(x=3, y=4, negative=True)])  # fmt: skip
    assert [(p.x, p.y, p.negative) for p in request.mask_prompt.points] == [
        (5, 6, False), (7.5, 8, True), (1, 2, False), (3, 4, True)]  # fmt: skip
    assert request.mask_prompt.tracker == pb.TRACKER_SAM2 and request.edited_first_frame_id == "sha256:e"
    request = train_request("a", "sha256:s", None, "p", mask_frame0=pb.MediaRef(id="sha256:f"), tracker="flow")
    assert request.mask_prompt == pb.MaskPrompt(frame0_mask_id="sha256:f", tracker=pb.TRACKER_FLOW)
    assert mask_prompt() is None and mask_prompt(box=pb.Box(x=1, y=1, width=2, height=2)).box.width == 2


def test_a_mask_id_is_sent_as_before():
    request = propagate_request("a", "sha256:s", "sha256:m", "sha256:e", "p")
    assert request.mask_id == "sha256:m" and not request.HasField("mask_prompt")
    assert train_request("a", "sha256:s", pb.MediaRef(id="sha256:m"), "p").mask_id == "sha256:m"


@pytest.mark.parametrize(
    "region, message",
    [({}, "give mask_id, or one of box, points or mask_frame0"),
     ({"mask_id": "sha256:m", "box": BOX}, "give mask_id or box, not both"),
     ({"mask_id": "sha256:m", "mask_frame0": "sha256:f"}, "give mask_id or mask_frame0, not both"),
     ({"box": BOX, "points": [(1, 2)]}, "give one of box, points or mask_frame0, not box and points"),
     ({"mask_id": "sha256:m", "tracker": "csrt"}, r"tracker \('csrt'\) tracks a box, points or mask_frame0"),
     ({"box": BOX, "tracker": "kalman"}, "tracker must be one of csrt, flow, sam2 but is 'kalman'"),
     ({"box": (1, 2, 3)}, "box must be"), ({"box": (1, 2, 0, 4)}, "box width and height must be above 0"),
     ({"box": (float("-inf"), 2, 3, 4)}, "box x must be a finite number"), ({"box": (1, float("nan"), 3, 4)}, "box y must be"),
     ({"box": (1, 2, -3, 4)}, "box width must be"),
     ({"points": []}, "points must hold at least one point"), ({"points": [(1, 2), (3,)]}, r"points\[1\] must be"),
     ({"points": [(1, 2, "off")]}, r"points\[0\] must be \(x, y\), or \(x, y, False\)"),
     ({"points": [(1, -2)]}, r"points\[0\] y must be")],
)  # fmt: skip
def test_no_region_or_two_or_bad_values_are_value_errors_naming_the_arguments(region, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        train_request("a", "sha256:s", prompt="p", **region)
    with pytest.raises(ValueError, match=f"^{message}"):
        propagate_request("a", "sha256:s", edited_first_frame_id="sha256:e", prompt="p", **region)


def test_a_box_may_hang_off_the_frame_on_any_side_the_server_clips_it():
    """Off the left or top as off the right or bottom: the server clips it and says so."""
    for box in ((-20, 30, 64, 48), (40, -7.5, 64, 48), (40, 30, 6400, 4800)):
        request = train_request("a", "sha256:s", prompt="p", box=box)
        assert (request.mask_prompt.box.x, request.mask_prompt.box.y) == box[:2]
    assert _parse(*PROPAGATE, "--box", "-20,30,64,48").box == (-20, 30, 64, 48)
    assert _parse(*PROPAGATE, "--box=-20,-30,64,48").box == (-20, -30, 64, 48)
    assert _parse("edit", "s.mp4", "--edited-first-frame", "e.png", "--prompt", "p", "--box", "-1,0,8,8").box == (-1, 0, 8, 8)
    assert _parse(*PROPAGATE, "--points", "-10,10;5,5").points == [(10, 10, False), (5, 5)]


def test_the_prompt_and_the_edited_first_frame_are_still_required():
    with pytest.raises(TypeError, match=r"^train\(\) needs prompt$"):
        train_request("a", "sha256:s", box=BOX)
    with pytest.raises(TypeError, match=r"^propagate\(\) needs edited_first_frame_id$"):
        propagate_request("a", "sha256:s", box=BOX, prompt="p")
    with pytest.raises(TypeError, match="mask_frame0 must be a media id"):
        train_request("a", "sha256:s", prompt="p", mask_frame0=7)


def test_the_job_calls_and_their_plans_send_the_same_mask_prompt(client, fake_stub, server_stream):
    fake = fake_stub(Train=server_stream([]), Propagate=server_stream([]), Plan=pb.PlanResponse(ok=True))
    client.train("a", "sha256:s", prompt="p", points=[(1, 2), (3, 4, False)], tracker="csrt")
    client.plan_train("a", "sha256:s", prompt="p", points=[(1, 2), (3, 4, False)], tracker="csrt")
    client.propagate("a", "sha256:s", edited_first_frame_id="sha256:e", prompt="p", box=BOX)
    client.plan_propagate("a", "sha256:s", edited_first_frame_id="sha256:e", prompt="p", box=BOX)
    (_, train, _), (_, train_plan, _), (_, propagate, _), (_, propagate_plan, _) = fake.calls
    assert train_plan == pb.PlanRequest(train=train) and propagate_plan == pb.PlanRequest(propagate=propagate)
    assert len(train.mask_prompt.points) == 2 and propagate.mask_prompt.box.height == 40
    assert plan_request("train", "a", "sha256:s", prompt="p", box=BOX).train.mask_prompt.HasField("box")
    with pytest.raises(ValueError, match="not both"):  # at call time: nothing is sent
        client.propagate("a", "sha256:s", "sha256:m", "sha256:e", "p", box=BOX)
    assert len(fake.calls) == 4


# ---- options --------------------------------------------------------------------------------

PROPAGATE = ["propagate", "--source", "s.mp4", "--edited-first-frame", "e.png", "--prompt", "p"]


def _parse(*argv):
    """As ``framecast`` parses its command line (a value starting with a minus taken as one)."""
    return cli.build_parser().parse_args(dashed_values(list(argv)))


def test_box_points_and_frame0_mask_options():
    args = _parse(*PROPAGATE, "--box", "10,20.5,30,40", "--tracker", "flow", "--tracked-mask", "t.mp4")
    assert (args.box, args.mask, args.points, args.mask_frame0) == ((10, 20.5, 30, 40), None, None, None)
    assert (args.tracker, args.tracked_mask) == ("flow", "t.mp4")
    assert _parse(*PROPAGATE, "--points", "120,80; -10,10;5,5").points == [(120, 80), (10, 10, False), (5, 5)]
    assert _parse(*PROPAGATE, "--points=-10,10;120,80").points == [(10, 10, False), (120, 80)]
    assert _parse(*PROPAGATE, "--mask-frame0", "m0.png").mask_frame0 == "m0.png"
    train = _parse("train", "--adapter", "a", "--source", "s", "--prompt", "p", "--box", "0,0,8,8")
    assert train.box == (0, 0, 8, 8) and train.tracker is None and train.tracked_mask is None
    edit = _parse("edit", "s.mp4", "--edited-first-frame", "e.png", "--prompt", "p", "--points", "4,4", "--tracked-mask", "t")
    assert edit.points == [(4, 4)] and edit.tracked_mask == "t"
    plan = _parse("plan", "s.mp4", "--prompt", "p", "--mask-frame0", "m0.png", "--tracker", "csrt")
    assert plan.mask_frame0 == "m0.png" and not hasattr(plan, "tracked_mask")
    assert _parse("jobs", "watch", "j", "--tracked-mask", "t.mp4").tracked_mask == "t.mp4"


@pytest.mark.parametrize(
    "extra, message",
    [(["--mask", "m.png", "--box", "1,2,3,4"], "argument --box: not allowed with argument --mask"),
     (["--points", "1,2", "--mask-frame0", "m.png"], "argument --mask-frame0: not allowed with argument --points"),
     ([], "one of the arguments --mask --box --points --mask-frame0 is required"),
     (["--box", "1,2,3"], "argument --box: must be X,Y,W,H"), (["--box", "1,2,0,4"], "argument --box: must be X,Y,W,H"),
     (["--box", "1,2,3,inf"], "argument --box: must be"), (["--box", "a,b,c,d"], "argument --box: must be"),
     (["--box", "nan,2,3,4"], "argument --box: must be"),
     (["--points", "1,2,3"], "argument --points: must be X,Y;X,Y;-X,Y"), (["--points", "1;2"], "argument --points"),
     (["--points", "1,-2"], "argument --points: must be"), (["--points=-1,2"], "at least one on the region"),
     (["--points", ";"], "argument --points: must be"),
     (["--box", "1,2,3,4", "--tracker", "kalman"], "argument --tracker: invalid choice")],
)  # fmt: skip
def test_bad_region_options_are_argparse_errors_naming_the_option(extra, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parse(*PROPAGATE, *extra)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_value_types():
    assert box_spec(" 1, 2 ,3,4.5") == (1, 2, 3, 4.5)
    assert points_spec("1,2;-3,4;") == [(1, 2), (3, 4, False)]


def test_tracker_and_tracked_mask_need_a_region_to_track(tmp_path):
    (tmp_path / "m.png").write_bytes(b"m")
    mask = str(tmp_path / "m.png")
    with pytest.raises(CliError, match="^--tracker needs --box, --points or --mask-frame0: a --mask is used as it is"):
        MaskInput.local(_parse(*PROPAGATE, "--mask", mask, "--tracker", "csrt"))
    with pytest.raises(CliError, match="^--tracked-mask needs --box"):
        MaskInput.local(_parse(*PROPAGATE, "--mask", mask, "--tracked-mask", "t.mp4"))
    with pytest.raises(CliError, match="^--mask-frame0: no such file"):
        MaskInput.local(_parse(*PROPAGATE, "--mask-frame0", str(tmp_path / "nope.png")))
    region = MaskInput.local(_parse(*PROPAGATE, "--mask-frame0", mask, "--tracker", "flow"))
    assert region == MaskInput(mask_frame0=tmp_path / "m.png", tracker="flow")


def test_the_region_is_uploaded_and_sent_as_keyword_arguments(tmp_path):
    (tmp_path / "m.png").write_bytes(b"m")
    upload = lambda path, flag: pb.MediaRef(id=f"sha256:{path.name}")  # noqa: E731
    region = MaskInput.local(_parse(*PROPAGATE, "--mask-frame0", str(tmp_path / "m.png"))).uploaded(upload)
    assert region.kwargs() == {"mask_id": None, "box": None, "points": None, "mask_frame0": "sha256:m.png", "tracker": None}
    region = MaskInput.local(_parse(*PROPAGATE, "--mask", str(tmp_path / "m.png"))).uploaded(upload)
    assert region.kwargs()["mask_id"] == "sha256:m.png"
    boxed = MaskInput.local(_parse(*PROPAGATE, "--box", "1,2,3,4")).uploaded(upload)
    assert boxed.kwargs()["box"] == (1, 2, 3, 4) and boxed.kwargs()["mask_id"] is None


# ---- progress -------------------------------------------------------------------------------

TRACKED = pb.TrackedMask(mask=pb.MediaRef(id="sha256:" + "ab" * 32, num_frames=25, filename="j-tracked-mask.mp4"),
                         lost_frames=[14, 15], tracker="csrt")  # fmt: skip
LOST = pb.Notice(code="region_lost", message="the region was lost in 2 of 25 working frames (14-15)", frames=[14, 15])


def test_notices_are_warnings_and_the_tracked_mask_is_said_once():
    stream = io.StringIO()
    progress = JobProgress("propagate", plain=True, stream=stream)
    progress(pb.JobEvent(job_id="j", notice=LOST))
    progress(pb.JobEvent(job_id="j", tracked=TRACKED))
    assert progress.tracked == TRACKED
    again = JobProgress("propagate", plain=True, stream=stream, said=progress.said)  # an edit's second job
    again(pb.JobEvent(job_id="k", notice=LOST))
    again(pb.JobEvent(job_id="k", tracked=TRACKED))
    assert stream.getvalue().splitlines() == [
        "warning: region_lost: the region was lost in 2 of 25 working frames (14-15)",
        f"tracked mask {TRACKED.mask.id} (csrt, 25 working frames, 2 lost)"]  # fmt: skip
    assert again.tracked == TRACKED


# ---- commands against fakes -----------------------------------------------------------------

MASK_BYTES = b"tracked mask video"


@pytest.fixture
def fake_server(monkeypatch):
    """Every client the command line opens talks to one RecordingStub: ``fake_server(**replies)``."""

    def install(**replies) -> RecordingStub:
        stub = RecordingStub(**replies)
        monkeypatch.setattr("framecast.client.client.pb_grpc.FramecastStub", lambda channel: stub)
        return stub

    return install


def _job(job_id: str, final: dict, *notices: pb.Notice) -> ServerStream:
    events = [pb.JobEvent(job_id=job_id, accepted=pb.JobInfo(job_id=job_id))]
    events += [pb.JobEvent(job_id=job_id, notice=notice) for notice in notices]
    events += [pb.JobEvent(job_id=job_id, tracked=TRACKED), pb.JobEvent(job_id=job_id, **final)]
    return ServerStream(events)


def _download(data: bytes, filename: str = "j-tracked-mask.mp4") -> ServerStream:
    return ServerStream([pb.MediaChunk(header=pb.MediaRef(size_bytes=len(data), filename=filename), data=data)])


def test_propagate_with_a_box_downloads_the_tracked_mask(fake_server, tmp_path, capsys):
    for name in ("s.mp4", "e.png"):
        (tmp_path / name).write_bytes(name.encode())
    result = pb.PropagateResult(video=pb.MediaRef(id="sha256:out", filename="out.mp4"), num_frames=25)
    fake = fake_server(UploadMedia=pb.MediaRef(id="sha256:up"), Propagate=_job("j", {"result": result}, LOST),
                       DownloadMedia=_download(MASK_BYTES))  # fmt: skip
    tracked = tmp_path / "tracked.mp4"
    assert cli.main(["propagate", "--server", "h:1", "--source", str(tmp_path / "s.mp4"), "--edited-first-frame",
                     str(tmp_path / "e.png"), "--prompt", "p", "--box", "1,2,3,4", "--tracker", "flow", "--tracked-mask",
                     str(tracked), "-o", str(tmp_path / "out.mp4")]) == 0  # fmt: skip
    out, err = capsys.readouterr()
    assert tracked.read_bytes() == MASK_BYTES and f"tracked mask        {tracked}" in out.splitlines()
    assert f"warning: region_lost: {LOST.message}" in err.splitlines() and f"tracked mask {TRACKED.mask.id}" in err
    ((_, request, _),) = [call for call in fake.calls if call[0] == "Propagate"]
    assert request.mask_prompt == pb.MaskPrompt(box=pb.Box(x=1, y=2, width=3, height=4), tracker=pb.TRACKER_FLOW)
    assert not request.mask_id and len([c for c in fake.calls if c[0] == "UploadMedia"]) == 2  # no mask to upload
    assert [request.id for name, request, _ in fake.calls if name == "DownloadMedia"] == ["sha256:out", TRACKED.mask.id]


def test_an_edit_says_a_notice_once_and_writes_the_tracked_mask(fake_server, tmp_path, capsys):
    for name in ("s.mp4", "e.png", "m0.png"):
        (tmp_path / name).write_bytes(name.encode())
    moves = pb.Notice(code="region_moves", message="the region moves out of the single mask", frames=[3, 4])
    plan = pb.PlanResponse(ok=True, width=64, height=64, fps=16, num_frames=17, windows=[pb.Window(frames=17)])
    fake = fake_server(
        UploadMedia=pb.MediaRef(id="sha256:up"), Plan=plan, Train=_job("t", {"adapter": pb.AdapterInfo(name="ed")}, moves),
        Propagate=_job("p", {"result": pb.PropagateResult(video=pb.MediaRef(id="sha256:out"))}, moves),
        DownloadMedia=_download(MASK_BYTES), GetServerInfo=pb.ServerInfo(model_settings_json="{}"),
    )  # fmt: skip
    tracked = tmp_path / "tracked.mp4"
    assert cli.main(["edit", str(tmp_path / "s.mp4"), "--server", "h:1", "--edited-first-frame", str(tmp_path / "e.png"),
                     "--prompt", "p", "--mask-frame0", str(tmp_path / "m0.png"), "--tracked-mask", str(tracked),
                     "-o", str(tmp_path / "out.mp4")]) == 0  # fmt: skip
    out, err = capsys.readouterr()
    hint = "(on the command line: --box, --points or --mask-frame0 instead of --mask)"
    assert err.count(f"warning: region_moves: the region moves out of the single mask {hint}\n") == 1
    assert err.count(f"tracked mask {TRACKED.mask.id}") == 1 and tracked.read_bytes() == MASK_BYTES
    assert f"tracked mask        {tracked}" in out.splitlines()
    requests = [request for name, request, _ in fake.calls if name in ("Train", "Propagate")]
    plans = [request for name, request, _ in fake.calls if name == "Plan"]
    assert [r.mask_prompt.frame0_mask_id for r in requests] == ["sha256:up", "sha256:up"]
    assert [p.WhichOneof("request") for p in plans] == ["train", "propagate"]
    assert plans[0].train.mask_prompt == requests[0].mask_prompt and not plans[1].propagate.mask_id


def test_a_watched_job_that_tracked_nothing_writes_no_tracked_mask(fake_server, tmp_path, capsys):
    info = pb.JobInfo(job_id="t", kind=pb.JOB_KIND_TRAIN, state=pb.JOB_STATE_RUNNING)
    events = [pb.JobEvent(job_id="t", accepted=info), pb.JobEvent(job_id="t", adapter=pb.AdapterInfo(name="a"))]
    fake_server(WatchJob=ServerStream(events), GetJob=info)
    tracked = tmp_path / "t.mp4"
    assert cli.main(["jobs", "--server", "h:1", "watch", "t", "--tracked-mask", str(tracked)]) == 0
    assert "note: the job reported no tracked mask; --tracked-mask" in capsys.readouterr().err
    assert not tracked.exists()


def test_info_lists_the_trackers(monkeypatch, capsys):
    from framecast.client.client import FramecastClient

    for info, says in ((pb.ServerInfo(ready=True, trackers=["csrt", "flow", "sam2"]), "csrt, flow, sam2 (for --box"),
                       (pb.ServerInfo(ready=False), "- (known once the model is loaded)")):  # fmt: skip
        monkeypatch.setattr(FramecastClient, "server_info", lambda self, timeout=None, info=info: info)
        assert cli.main(["info", "--server", "h:1"]) == 0
        (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("trackers ")]
        assert says in line
