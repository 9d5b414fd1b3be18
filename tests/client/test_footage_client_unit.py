"""The client side of real footage, without a server: shot options, references by time, quality and
interpolation in the requests, Plan built from the same request as the job, server addresses, the
new commands' options, folders of frames, progress lines, re-attaching, serve's defaults."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile

import grpc
import pytest

from framecast.client import FramecastError, cli
from framecast.client.cli.args import CliError
from framecast.client.cli.inputs import Uploads, frame_files, zip_frames
from framecast.client.client import FramecastClient, server_address
from framecast.client.display import format_job_table, format_plan
from framecast.client.jobs import accepted, run_train, wait_for_result
from framecast.client.progress import JobProgress, Throttle, follow_job, format_duration
from framecast.client.requests import plan_request, propagate_request, train_request
from framecast.v1 import framecast_pb2 as pb

ARGS = ("a", "sha256:s", "sha256:m", "p")  # adapter, source, mask, prompt
PROPAGATE_ARGS = ("a", "sha256:s", "sha256:m", "sha256:e", "p")


# ---- requests -------------------------------------------------------------------------------


def test_shot_options_are_sent_only_when_given():
    assert not train_request(*ARGS).HasField("shot")
    assert not propagate_request(*PROPAGATE_ARGS).HasField("shot")
    request = train_request(*ARGS, start_s=1.5, end_s=0, fps=8, fit="crop")
    assert request.shot == pb.ShotOptions(start_s=1.5, end_s=0.0, fps=8.0, fit=pb.FIT_MODE_CROP)
    assert request.shot.HasField("end_s")  # 0 is a value, not "the source's end"
    request = propagate_request(*PROPAGATE_ARGS, source_fps=True, fit=pb.FIT_MODE_PAD)
    assert request.shot == pb.ShotOptions(source_fps=True, fit=pb.FIT_MODE_PAD)


@pytest.mark.parametrize(
    "options, error, argument",
    [({"start_s": -1.0}, ValueError, "start_s"), ({"end_s": float("nan")}, ValueError, "end_s"),
     ({"fps": float("inf")}, ValueError, "fps"), ({"fps": "16"}, TypeError, "fps"),
     ({"fit": "stretch"}, ValueError, "fit"), ({"references": [(-0.5, "sha256:r")]}, ValueError, "references")],
)  # fmt: skip
def test_bad_shot_values_are_refused_naming_the_argument(options, error, argument):
    with pytest.raises(error, match=f"^{argument}"):
        train_request(*ARGS, **options)


def test_references_by_frame_index_or_by_time():
    request = train_request(*ARGS, references=[(4, "sha256:a"), (1.25, pb.MediaRef(id="sha256:b")), (0.0, "sha256:c")])
    first, second, third = request.references
    assert (first.frame_index, first.image_id, first.HasField("time_s")) == (4, "sha256:a", False)
    assert (second.time_s, second.image_id, second.HasField("time_s")) == (1.25, "sha256:b", True)
    assert third.HasField("time_s") and third.time_s == 0.0  # a float 0: the first frame's time


def test_quality_and_interpolation():
    request = propagate_request(*PROPAGATE_ARGS, quality=0, interpolation="blend")
    assert request.HasField("quality") and request.quality == 0
    assert request.interpolation == pb.INTERPOLATION_BLEND
    unset = propagate_request(*PROPAGATE_ARGS)
    assert not unset.HasField("quality") and unset.interpolation == pb.INTERPOLATION_UNSPECIFIED
    with pytest.raises(ValueError, match="^quality must be between 0 and 51 but is 52$"):
        propagate_request(*PROPAGATE_ARGS, quality=52)
    with pytest.raises(ValueError, match="^interpolation must be one of nearest, blend, flow"):
        propagate_request(*PROPAGATE_ARGS, interpolation="cubic")


def test_plan_sends_the_request_the_job_would(client, fake_stub, server_stream):
    fake = fake_stub(Train=server_stream([]), Propagate=server_stream([]), Plan=pb.PlanResponse(ok=True))
    options = dict(steps=7, references=[(0.5, "sha256:r")], start_s=1.0, fit="pad")
    client.train(*ARGS, **options)
    assert client.plan_train(*ARGS, **options).ok
    assert client.plan("train", *ARGS, **options, timeout=3).ok
    (_, job, _), (_, plan, timeout), (_, again, short) = fake.calls
    assert plan == again == pb.PlanRequest(train=job) and (timeout, short) == (5.0, 3)

    options = dict(quality=30, interpolation="nearest", source_fps=True, composite=True)
    client.propagate(*PROPAGATE_ARGS, **options)
    client.plan_propagate(*PROPAGATE_ARGS, **options)
    (_, job, _), (_, plan, _) = fake.calls[3:]
    assert plan == pb.PlanRequest(propagate=job)
    with pytest.raises(ValueError, match="^kind must be one of train, propagate"):
        client.plan("edit", *ARGS)
    with pytest.raises(TypeError):
        client.plan_train(*ARGS, quality=3)  # a propagation's option
    assert len(fake.calls) == 5


def test_plan_request_of_each_kind():
    assert plan_request("train", *ARGS).WhichOneof("request") == "train"
    assert plan_request("propagate", *PROPAGATE_ARGS).WhichOneof("request") == "propagate"


# ---- addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address, expected",
    [("myhost", "myhost:50051"), ("myhost:7000", "myhost:7000"), ("10.0.0.2", "10.0.0.2:50051"),
     ("[::1]", "[::1]:50051"), ("[::1]:7000", "[::1]:7000"), ("::1", "[::1]:50051"),
     ("unix:/run/framecast.sock", "unix:/run/framecast.sock"), ("dns:///myhost:443", "dns:///myhost:443")],
)  # fmt: skip
def test_an_address_without_a_port_means_50051(address, expected):
    assert server_address(address) == expected
    with FramecastClient(address) as client:
        assert client.address == expected
    assert cli.build_parser().parse_args(["info", "--server", address]).server == expected


@pytest.mark.parametrize("address", ["", ":7000", "[::1", "myhost:http", "myhost:0", "myhost:70000"])
def test_a_bad_address_is_refused(address, capsys):
    with pytest.raises(ValueError):
        server_address(address)
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["info", "--server", address])
    assert "argument --server:" in capsys.readouterr().err


# ---- options --------------------------------------------------------------------------------

EDIT = ["edit", "clip.mp4", "--mask", "masks", "--edited-first-frame", "e.png", "--prompt", "a red car"]


def test_parse_edit_defaults():
    args = cli.build_parser().parse_args(EDIT)
    assert args.run is cli.cmd_edit and args.source == "clip.mp4" and args.mask == "masks"
    assert (args.train_steps, args.steps, args.rank, args.seed) == (None, None, None, 0)  # the model's, or a --preset's
    assert args.composite is True and args.adapter is None and args.source_prompt is None
    assert (args.start, args.end, args.fps, args.source_fps, args.fit) == (None, None, None, False, None)
    assert (args.quality, args.interpolation, args.output, args.detach) == (None, None, None, False)


def test_parse_edit_options():
    args = cli.build_parser().parse_args([
        *EDIT, "--train-steps", "5", "--steps", "3", "--source-prompt", "a car", "--adapter", "car", "--no-composite",
        "--start", "1:02.5", "--end", "70", "--fps", "8", "--fit", "crop", "--quality", "23", "--interpolation", "blend",
        "--reference", "0.5s:r.png", "--reference", "12:s.png", "-o", "out.mp4", "--detach", "--server", "gpu-box",
    ])  # fmt: skip
    assert (args.train_steps, args.steps, args.source_prompt, args.adapter, args.composite) == (5, 3, "a car", "car", False)
    assert (args.start, args.end, args.fps, args.fit) == (62.5, 70.0, 8.0, "crop")
    assert (args.quality, args.interpolation, args.output, args.detach) == (23, "blend", "out.mp4", True)
    assert args.reference == [(0.5, "r.png"), (12, "s.png")] and isinstance(args.reference[1][0], int)
    assert args.server == "gpu-box:50051"


@pytest.mark.parametrize(
    "argv, message",
    [([*EDIT, "--fps", "8", "--source-fps"], "not allowed with argument"),
     ([*EDIT, "--quality", "52"], "--quality: must be a whole number from 0 to 51"),
     ([*EDIT, "--start", "-1"], "--start: must be seconds"), ([*EDIT, "--end", "1:75"], "--end: must be seconds"),
     ([*EDIT, "--fit", "stretch"], "--fit: invalid choice"), ([*EDIT, "--reference", "xs:r.png"], "SECONDSs:IMAGE"),
     ([*EDIT, "--interpolation", "cubic"], "--interpolation: invalid choice"), (EDIT[:-2], "--prompt"),
     (["plan", "clip.mp4", "--prompt", "p"], "--mask"), (["jobs", "list", "--state", "done"], "--state: invalid choice")],
)  # fmt: skip
def test_parse_refuses_bad_options(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_parse_shot_options_on_train_and_propagate():
    train = cli.build_parser().parse_args(["train", "--adapter", "a", "--source", "s", "--mask", "m", "--prompt", "p",
                                           "--start", "2", "--source-fps", "--fit", "pad", "--detach"])  # fmt: skip
    assert (train.start, train.source_fps, train.fit, train.detach) == (2.0, True, "pad", True)
    prop = cli.build_parser().parse_args(["propagate", "--source", "s", "--mask", "m", "--edited-first-frame", "e",
                                          "--prompt", "p", "--quality", "0", "--interpolation", "flow",
                                          "--end", "3"])  # fmt: skip
    assert (prop.quality, prop.interpolation, prop.end, prop.composite, prop.detach) == (0, "flow", 3.0, False, False)


def test_parse_plan_and_jobs():
    plan = cli.build_parser().parse_args(["plan", "clip.mp4", "--mask", "m.png", "--prompt", "p", "--job", "train"])
    assert plan.run is cli.cmd_plan and plan.job == "train" and plan.edited_first_frame is None
    assert not hasattr(plan, "detach") and not hasattr(plan, "output")
    assert cli.build_parser().parse_args(["plan", "clip.mp4", "--mask", "m", "--prompt", "p"]).job == "edit"
    jobs = cli.build_parser().parse_args(["jobs", "list", "--state", "running", "--limit", "5", "--server", "h"])
    assert (jobs.run, jobs.action, jobs.state, jobs.limit, jobs.server) == (cli.cmd_jobs, "list", "running", 5, "h:50051")
    watch = cli.build_parser().parse_args(["jobs", "--server", "h:1", "watch", "abc", "-o", "out.mp4"])
    assert (watch.action, watch.job_id, watch.output, watch.server) == ("watch", "abc", "out.mp4", "h:1")
    assert cli.build_parser().parse_args(["jobs", "cancel", "abc"]).action == "cancel"
    assert cli.build_parser().parse_args(["jobs"]).action is None  # = list


def test_plan_of_a_propagation_needs_the_edited_first_frame(tmp_path, capsys):
    (tmp_path / "clip.mp4").write_bytes(b"x")
    assert cli.main(["plan", str(tmp_path / "clip.mp4"), "--mask", str(tmp_path / "clip.mp4"), "--prompt", "p",
                     "--server", "127.0.0.1:1"]) == 2  # fmt: skip
    assert "--edited-first-frame is required to plan a propagation" in capsys.readouterr().err


# ---- folders of frames ----------------------------------------------------------------------


def test_a_folder_of_frames_is_zipped_in_name_order_untouched(tmp_path):
    folder = tmp_path / "masks"
    folder.mkdir()
    for name in ("m10.png", "m2.PNG", "m1.jpg", ".hidden.png", "notes.txt"):
        (folder / name).write_bytes(name.encode())
    (folder / "sub").mkdir()
    before = sorted(p.name for p in folder.iterdir())
    assert [p.name for p in frame_files(folder, "--mask")] == ["m1.jpg", "m2.PNG", "m10.png"]
    first, second = zip_frames(folder, tmp_path / "a.zip", "--mask"), zip_frames(folder, tmp_path / "b.zip", "--mask")
    with zipfile.ZipFile(first) as archive:
        assert archive.namelist() == ["frame_00000.jpg", "frame_00001.png", "frame_00002.png"]
        assert [archive.read(name) for name in archive.namelist()] == [b"m1.jpg", b"m2.PNG", b"m10.png"]
    assert first.read_bytes() == second.read_bytes()  # the same frames, the same media id
    assert sorted(p.name for p in folder.iterdir()) == before
    (tmp_path / "empty").mkdir()
    with pytest.raises(CliError, match="^--source: the folder .* holds no PNG or JPEG frames$"):
        frame_files(tmp_path / "empty", "--source")


def test_uploads_send_each_input_once_with_progress(client, fake_stub, tmp_path):
    fake = fake_stub(UploadMedia=pb.MediaRef(id="sha256:x", width=4, height=4, num_frames=3))
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(3):
        (folder / f"{index}.png").write_bytes(b"p" * 10)
    (tmp_path / "edited.png").write_bytes(b"e")
    with Uploads(client, timeout=None, quiet=True) as upload:
        assert upload(folder, "--mask").id == "sha256:x"
        upload(tmp_path / "edited.png", "--edited-first-frame")
        upload(tmp_path / "." / "edited.png", "--reference")  # the same file: not sent again
        scratch = upload._scratch.name
    assert [chunks[0].header.filename for _, chunks, _ in fake.calls] == ["frames.zip", "edited.png"]
    assert not (tmp_path / scratch).exists()  # the zip went with the context


def test_upload_reports_its_progress(client, fake_stub):
    fake_stub(UploadMedia=pb.MediaRef(id="sha256:x"))
    seen = []
    client.upload(b"a" * 25, filename="a.mp4", chunk_bytes=10, on_progress=lambda sent, total: seen.append((sent, total)))
    assert seen == [(10, 25), (20, 25), (25, 25)]


# ---- progress -------------------------------------------------------------------------------


def _progress(phase: str, step: int, total: int, loss: float = 0.0, eta: float = 0.0) -> pb.JobEvent:
    return pb.JobEvent(job_id="j", progress=pb.Progress(phase=phase, step=step, total=total, loss=loss, eta_s=eta))


def test_plain_progress_lines(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr("framecast.client.progress.time.monotonic", lambda: clock[0])
    stream = io.StringIO()
    progress = JobProgress("train", stream=stream)  # a StringIO is no terminal: plain lines
    progress(pb.JobEvent(job_id="j", accepted=pb.JobInfo(job_id="j")))
    progress(pb.JobEvent(job_id="j", queued=pb.Queued(position=2)))
    for step in range(1, 101):
        clock[0] += 0.5  # 50 s in all: a line at each tenth (5 s apart), none for the steps between
        progress(_progress("motion", step, 100, loss=0.1234, eta=(100 - step) * 0.5))
    progress(_progress("appearance", 1, 10, loss=0.5, eta=3))
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines[:3] == ["train queued: 2 jobs ahead", "train motion 1/100 loss 0.1234 eta 50s",
                         "train motion 10/100 loss 0.1234 eta 45s"]  # fmt: skip
    assert lines[-2:] == ["train motion 100/100 loss 0.1234", "train appearance 1/10 loss 0.5000 eta 3s"]
    assert len(lines) == 13 and progress.job_id == "j"


def test_a_phase_that_ends_before_its_last_step_says_where_it_ended():
    stream = io.StringIO()
    progress = JobProgress("train", plain=True, stream=stream)
    for step in (1, 2, 3):  # a training's steps count on from its motion phase into its appearance phase
        progress(_progress("motion", step, 8, loss=0.25, eta=1))
    progress(_progress("appearance", 4, 8, loss=0.5, eta=1))
    assert stream.getvalue().splitlines() == ["train motion 1/8 loss 0.2500 eta 1s", "train motion 3/8 loss 0.2500 eta 1s",
                                              "train appearance 4/8 loss 0.5000 eta 1s"]  # fmt: skip


def test_reading_and_writing_lines_say_what_they_count():
    """decode (and a mask video's reading) count working frames, as the plan does; encode the
    output's frames; the steps of training and denoising are steps."""
    stream = io.StringIO()
    progress = JobProgress("propagate", plain=True, stream=stream)
    for phase, total in (("decode", 40), ("mask", 40), ("denoise", 2), ("encode", 35)):
        progress(_progress(phase, total, total))
    assert stream.getvalue().splitlines() == ["propagate decode 40/40 working frames", "propagate mask 40/40 working frames",
                                              "propagate denoise 2/2", "propagate encode 35/35 output frames"]  # fmt: skip


def test_throttle(monkeypatch):
    clock = [0.0]
    throttle = Throttle(heartbeat_s=10, min_gap_s=2, clock=lambda: clock[0])
    assert throttle.due(0, 1000)  # a phase's first
    clock[0] = 1.0
    assert not throttle.due(500, 1000)  # half done, but within the minimum gap
    clock[0] = 3.0
    assert throttle.due(501, 1000)  # a new tenth since the last line
    clock[0] = 12.0
    assert not throttle.due(502, 1000)  # the same tenth, under the heartbeat
    clock[0] = 13.5
    assert throttle.due(503, 1000)  # the heartbeat
    assert throttle.due(1000, 1000) and not throttle.due(1000, 1000)  # the last, once


def test_format_duration():
    assert [format_duration(s) for s in (0, 12.4, 185, 3720)] == ["0s", "12s", "3m05s", "1h02m"]


# ---- following and re-attaching -------------------------------------------------------------


def test_accepted_reads_the_first_event_or_raises(rpc_error):
    events = iter([pb.JobEvent(job_id="j", accepted=pb.JobInfo(job_id="j")), pb.JobEvent(job_id="j")])
    assert accepted(events).job_id == "j" and next(events) == pb.JobEvent(job_id="j")
    with pytest.raises(FramecastError, match="began with a queued event"):
        accepted(iter([pb.JobEvent(job_id="j", queued=pb.Queued())]))
    with pytest.raises(FramecastError, match="began with nothing"):
        accepted(iter([]))


def test_a_watched_job_that_ended_before_a_restart_ends_as_it_did():
    adapter = pb.AdapterInfo(name="a")
    done = pb.JobInfo(job_id="j", state=pb.JOB_STATE_SUCCEEDED, adapter_result=adapter)
    assert run_train([pb.JobEvent(job_id="j", accepted=done)]) == adapter
    failed = pb.JobInfo(job_id="j", state=pb.JOB_STATE_FAILED, error=pb.JobError(code="INTERNAL", message="boom"))
    with pytest.raises(FramecastError, match="^INTERNAL: boom$"):
        wait_for_result([pb.JobEvent(job_id="j", accepted=failed)])
    running = pb.JobInfo(job_id="j", state=pb.JOB_STATE_RUNNING)
    with pytest.raises(FramecastError, match="ended before the job finished"):
        wait_for_result([pb.JobEvent(job_id="j", accepted=running)])


def _deadline(server_stream, rpc_error):
    return server_stream([pb.JobEvent(job_id="t", accepted=pb.JobInfo(job_id="t"))],
                         rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))  # fmt: skip


def test_a_deadline_cancels_an_edit_s_propagation_too(client, fake_stub, server_stream, rpc_error):
    fake = fake_stub(Train=_deadline(server_stream, rpc_error), CancelJob=pb.JobInfo(state=pb.JOB_STATE_CANCELLED))
    with pytest.raises(FramecastError) as info:
        follow_job(client, run_train, client.train(*ARGS), JobProgress("train", disable=True), dependents=("p",))
    assert info.value.message == "timed out after 5 s; cancelled job t; cancelled job p"
    assert [request.job_id for name, request, _ in fake.calls if name == "CancelJob"] == ["t", "p"]


def test_a_watch_that_stops_leaves_the_job_running(client, fake_stub, server_stream, rpc_error):
    fake = fake_stub(WatchJob=_deadline(server_stream, rpc_error), CancelJob=pb.JobInfo())
    with pytest.raises(FramecastError, match="job t keeps running: framecast jobs --server 127.0.0.1:1 watch t follows"):
        follow_job(client, run_train, client.watch_job("t"), JobProgress("train", disable=True), owned=False)
    assert [name for name, *_ in fake.calls] == ["WatchJob"]


# ---- display --------------------------------------------------------------------------------


def test_format_plan_and_jobs():
    plan = pb.PlanResponse(
        ok=False, width=832, height=464, fps=16, num_frames=80, padded_frames=81, output_frames=150,
        output_duration_s=5.0, windows=[pb.Window(start=0, frames=81)], steps=30, estimated_device_bytes=3 << 30,
        source=pb.MediaRef(id="sha256:s", width=1920, height=1080, num_frames=150, fps=30, duration_s=5, has_audio=True),
        problems=[pb.Problem(field="mask_id", message="mask_id has another aspect (got '4:3')")],
    )  # fmt: skip
    text = format_plan("propagate", plan)
    for line in ("working grid    832x464 at 16 fps", "working frames  80 (run as 81, 4N+1)",
                 "source          1920x1080, 150 frames at 30 fps, 5.00 s, audio", "output          150 frames, 5.00 s",
                 "windows         1 (0-80)", "memory          3.0 GiB", "time            no estimate until the server "
                 "has run a propagate job", "problems        1", "  - mask_id has another aspect (got '4:3')"):  # fmt: skip
        assert line in text
    jobs = [pb.JobInfo(job_id="a" * 16, kind=pb.JOB_KIND_TRAIN, state=pb.JOB_STATE_RUNNING, adapter="car",
                       progress=pb.Progress(phase="motion", step=3, total=10)),
            pb.JobInfo(job_id="b" * 16, kind=pb.JOB_KIND_PROPAGATE, state=pb.JOB_STATE_QUEUED, queue_position=1),
            pb.JobInfo(job_id="c" * 16, kind=pb.JOB_KIND_PROPAGATE, state=pb.JOB_STATE_FAILED,
                       error=pb.JobError(code="INTERNAL", message="boom"))]  # fmt: skip
    rows = [line.split(maxsplit=4) for line in format_job_table(jobs).splitlines()[1:]]
    assert [row[:4] for row in rows] == [["a" * 16, "train", "running", "car"], ["b" * 16, "propagate", "queued", "-"],
                                         ["c" * 16, "propagate", "failed", "-"]]  # fmt: skip
    assert [row[4].split("  ")[-1].strip() for row in rows] == ["motion 3/10", "1 ahead", "INTERNAL: boom"]
    assert format_job_table([]) == "no jobs"


# ---- serve and demo -------------------------------------------------------------------------


def test_serve_without_model_or_data_serves_the_built_in_model_from_the_user_data_dir(monkeypatch, tmp_path):
    from framecast.engine.model import builtin_model_dir
    from framecast.server.cli import default_data_dir, server_config

    args = cli.build_parser().parse_args(["serve", "--port", "0"])
    assert (args.model_dir, args.data_dir) == (None, None)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    config = server_config(args)
    assert config.engine.model_dir == str(builtin_model_dir()) and config.data_dir == str(tmp_path / "xdg" / "framecast")
    for value in ("", "relative/dir"):  # not absolute: ignored, as the XDG spec says
        monkeypatch.setenv("XDG_DATA_HOME", value)
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        assert default_data_dir() == tmp_path / "home" / ".local" / "share" / "framecast"
    args = cli.build_parser().parse_args(["serve", "--model", str(builtin_model_dir()), "--data", str(tmp_path / "d")])
    assert server_config(args).data_dir == str(tmp_path / "d")


@pytest.mark.parametrize("command", ["demo", "serve"])
def test_a_client_only_install_says_which_extra_demo_and_serve_need(command, tmp_path):
    where = "--data" if command == "serve" else "--out"
    code = ("import sys; sys.modules['torch'] = None\n"  # torch absent, as in `pip install framecast`
            "from framecast.client.cli import main\n"
            f"sys.exit(main([{command!r}, {where!r}, {str(tmp_path / 'out')!r}]))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (f"error: {command} needs torch, which is not installed (a client-only install?): "
                           "pip install 'framecast[server]'\n")
    assert not (tmp_path / "out").exists()  # nothing written first


def test_sampling_levers_in_the_request_and_the_command_line():
    from framecast.client.cli.jobs import propagate_kwargs

    request = propagate_request(*PROPAGATE_ARGS, guidance_steps=10, step_cache="taylorseer", cache_interval=2)
    assert (request.guidance_steps, request.step_cache, request.cache_interval) == (10, pb.STEP_CACHE_TAYLORSEER, 2)
    assert not request.HasField("cache_threshold")
    unset = propagate_request(*PROPAGATE_ARGS)
    assert (unset.guidance_steps, unset.step_cache) == (0, pb.STEP_CACHE_UNSPECIFIED)
    assert not unset.HasField("cache_interval") and not unset.HasField("cache_threshold")
    with pytest.raises(ValueError, match="step_cache"):
        propagate_request(*PROPAGATE_ARGS, step_cache="teacache")
    args = cli.build_parser().parse_args(["propagate", "--adapter", "a", "--source", "s", "--mask", "m",
                                          "--edited-first-frame", "e", "--prompt", "p", "--guidance-steps", "5",
                                          "--step-cache", "first-block", "--cache-threshold", "0.1"])  # fmt: skip
    request = propagate_request(*PROPAGATE_ARGS, **{k: v for k, v in propagate_kwargs(args).items() if v is not None})
    assert (request.guidance_steps, request.step_cache) == (5, pb.STEP_CACHE_FIRST_BLOCK)
    assert request.cache_threshold == pytest.approx(0.1)


def test_steps_in_all_in_the_request_and_the_command_line():
    from framecast.client.cli.jobs import train_kwargs

    assert train_request(*ARGS, steps_in_all=True).steps_in_all and not train_request(*ARGS).steps_in_all
    args = cli.build_parser().parse_args(["train", "--adapter", "a", "--source", "s", "--mask", "m", "--prompt", "p",
                                          "--steps-in-all"])  # fmt: skip
    assert train_kwargs(args, [])["steps_in_all"] is True


def test_a_preset_is_named_on_the_wire_and_what_the_call_leaves_unset_stays_unset():
    """The server fills a request's unset fields from its preset and its model's settings; the
    client sends the preset's name and only what the call set."""
    from framecast.client.requests import job_request

    fast = job_request("propagate", *PROPAGATE_ARGS, preset="fast")
    assert fast.preset == "fast" and (fast.steps, fast.guidance_steps, fast.step_cache) == (0, 0, 0)
    assert not fast.HasField("guidance_scale") and not fast.HasField("adapter_strength")
    mine = job_request("propagate", *PROPAGATE_ARGS, preset="fast", steps=40, step_cache=None)
    assert (mine.steps, mine.step_cache, mine.preset) == (40, 0, "fast")  # given is sent; None is unset
    train = job_request("train", *ARGS, preset="quality")
    assert train.preset == "quality" and train.steps == 0 and not train.HasField("colour_variants")
    assert job_request("train", *ARGS, colour_variants=0).HasField("colour_variants")  # 0 said, not unset
    with pytest.raises(TypeError, match="preset must be a str"):
        job_request("train", *ARGS, preset=3)
    args = cli.build_parser().parse_args(["edit", "s.mp4", "--box", "1,2,3,4", "--edited-first-frame", "e.png",
                                          "--prompt", "p", "--preset", "fast", "--steps", "20", "--window-frames", "9"])  # fmt: skip
    from framecast.client.cli.jobs import propagate_kwargs, train_kwargs

    request = job_request("propagate", *PROPAGATE_ARGS, **propagate_kwargs(args))
    assert (request.steps, request.guidance_steps, request.window_frames, request.preset) == (20, 0, 9, "fast")
    assert not request.HasField("guidance_scale") and not request.HasField("feather_px")
    request = job_request("train", *ARGS, **train_kwargs(args, []))
    assert (request.window_frames, request.steps_in_all, request.steps, request.rank) == (9, False, 0, 0)
    assert not request.HasField("colour_variants") and request.learning_rate == 0
