"""Caffe's Solver: the Step loop and testing, phase for phase.

`Solver.solve` follows `Solver::Solve`/`Solver::Step` line by line: test at test_interval
(and at iteration 0 unless test_initialization is off), iter_size forward/backward passes,
the smoothed loss for display, `ApplyUpdate` (lr, clip, normalize, regularize, update), the
iteration count, snapshots; after max_iter a final snapshot, a last forward for the displayed
loss, and a last test.  Its logs are Caffe's lines, so the results read our runs like Caffe's.

Signals (replicate.solver.requests) are acted on where Caffe acts on them: after each update and
before each test batch.  Snapshots and the restore from one are replicate.solver.snapshots: every
snapshot also writes a resume sidecar (replicate.solver.resume), so a run resumed from any snapshot
of ours continues bit for bit.

An iteration never reads a value back from the device: the loss, its smoothed value and the
divergence watch stay there (replicate.solver.loss_monitor) until an iteration that displays,
tests or snapshots reads them.  With `compile`, SGD runs each iteration as one compiled graph
(replicate.solver.compiled_step); other solvers run the compiled net with autograd's backward.
The first compiled iteration and the first batch of each test net are checked against eager code
(replicate.solver.compile_check); where they differ the run goes on eager, and says so in its log
and metrics.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from replicate.errors import ReplicateError
from replicate.layers.dropout import Dropout
from replicate.net.compile import CompiledNet, ForwardResult
from replicate.proto import caffe_pb2
from replicate.solver import requests as req
from replicate.solver import compile_check, snapshots
from replicate.solver.compiled_step import CompiledIteration, why_not_fused
from replicate.solver.data_feed import close_data_layers, data_layers, feed_data
from replicate.solver.device import device_name, set_precision
from replicate.solver.distributed import GradientAverager, Group, check_averageable, union_over
from replicate.solver.log import RunLog, caffe_number, output_text
from replicate.solver.loss_monitor import LossMonitor, Reading
from replicate.solver.lr_policy import check_policy, learning_rate
from replicate.solver.nets import NetSpec, test_nets, train_net
from replicate.solver.snapshots import Positions, Snapshots
from replicate.solver.updates import UpdateRule


class TrainingDiverged(ReplicateError):
    """The loss became NaN or infinite: training stops and no snapshot of it is written."""


def build_net(spec: NetSpec, device: torch.device, channels_last: bool = False) -> CompiledNet:
    """A net of the solver on `device`, NHWC when `channels_last`."""
    net = CompiledNet(spec.param, spec.phase, spec.stages, spec.level, spec.folder).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


class Solver:
    """Trains the solver's train net and tests its test nets, as Caffe's SGDSolver family.

    Speed options that leave Caffe's arithmetic alone: `channels_last` (NHWC memory layout of
    weights and activations), `compile` (torch.compile of the nets, and for SGD of the whole
    training iteration, recorded as a CUDA graph on a GPU unless `cuda_graph` is False; True for
    inductor, or the name of another torch.compile backend) and `data_workers` (processes
    reading each data layer's records; see replicate.solver.data_feed).
    `group` makes it one process of a data-parallel run (replicate.solver.distributed).
    `snapshot_keep` K > 0 keeps only the last K snapshots (and the final one); 0 keeps all, as Caffe.
    """

    def __init__(
        self,
        param: caffe_pb2.SolverParameter,
        folder: Path,
        device: torch.device,
        log: RunLog,
        precision: str = "fp32",
        channels_last: bool = False,
        compile: bool | str = False,
        group: Group = Group(),
        data_workers: int | None = None,
        requests: req.Requests | None = None,
        snapshot_keep: int = 0,
        cuda_graph: bool = True,
    ):
        check_policy(param)
        if param.iter_size < 1:
            # Caffe would average the loss over no passes (0/0) and scale the update by 1/iter_size.
            raise ReplicateError(f"iter_size must be at least 1, not {param.iter_size}")
        if param.average_loss < 1:
            # Caffe's Solver::Init CHECKs it; taken as 1 here, the displayed loss would be smoothed
            # otherwise than asked.
            raise ReplicateError(f"average_loss must be at least 1, not {param.average_loss}")
        if snapshot_keep < 0:
            raise ReplicateError(f"snapshot keep must be 0 (keep all) or more, not {snapshot_keep}")
        set_precision(precision)
        self.param = param
        self.folder = folder
        self.device = device
        self.log = log
        if param.snapshot_format == caffe_pb2.SolverParameter.HDF5:
            log.warning("snapshot_format HDF5: snapshots are written as binary protobuf (.caffemodel, "
                        ".solverstate) all the same, the format this program reads")
        # Settings that change only what Caffe writes, not what it learns: said, not silently dropped.
        if param.snapshot_diff:
            log.warning("snapshot_diff: snapshots hold the weights only, not their gradients as Caffe's would")
        if param.debug_info:
            log.warning("debug_info: Caffe's per-layer data and gradient norms are not logged")
        self.precision = precision
        self.group = group
        seed = param.random_seed
        if group.world > 1:
            seed = group.shared_seed(seed if seed >= 0 else int(torch.randint(0, 2**31 - 1, (1,))))
        if seed >= 0:
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
        spec = train_net(param, folder)
        if group.world > 1:
            check_averageable(spec.param, f"training net ({spec.origin})")
        log.info(f"Creating training net from {spec.origin}")
        self.net = build_net(spec, device, channels_last)
        self.backend = (compile if isinstance(compile, str) else "inductor") if compile else None
        self._program = self._compiled(self.net.program)
        self.test_nets: list[CompiledNet] = []
        try:
            self.net.check_trainable()
            test_specs = test_nets(param, folder)
            if test_specs and param.test_interval <= 0:
                # Caffe's Solver::Init CHECKs it; here the nets would silently never be tested.
                raise ReplicateError(
                    f"the solver has {len(test_specs)} test net(s) but test_interval {param.test_interval}: "
                    "give a test_interval above 0, or no test nets (test_net, test_iter) to train without tests"
                )
            for i, test_spec in enumerate(test_specs):
                log.info(f"Creating test net (#{i}) specified by {test_spec.origin}")
                test_net = build_net(test_spec, device, channels_last)
                test_net.share_trained_layers_with(self.net)
                self.test_nets.append(test_net)
            #: The data path chosen for the data layers (empty for nets fed through Input blobs).
            self.data_feed, self._pool = feed_data([self.net, *self.test_nets], device, data_workers)
        except BaseException:
            self._close_data()  # no solver is returned, so nobody else can close what was opened
            raise
        self._test_programs = [self._compiled(net.program) for net in self.test_nets]
        #: How this run trains: metrics.jsonl's first record, written when solving starts (after a
        #: resume has restored the weights) with `weights`, what the load of weights filled.
        self.config = dict(
            kind="config", precision=precision, device=str(device), device_name=device_name(device),
            torch=torch.__version__, channels_last=channels_last, compile=compile, world_size=group.world,
            cpu_threads=torch.get_num_threads(), **self.data_feed,
        )
        #: What the weights were loaded from (replicate.net.copy_check.WeightsLoad.record); None:
        #: every layer starts from its fillers.
        self.weights: dict | None = None
        self.entries = self.net.learnable_params()
        self._averager = GradientAverager(group, [e.param for e in self.entries]) if group.world > 1 else None
        self.rule = UpdateRule(param, [e.param.shape for e in self.entries], device)
        #: Why a training iteration is not one compiled graph; None when it is.
        self.unfused = why_not_fused(self.rule, self.net, group.world) if compile else "not compiled"
        self.fused: CompiledIteration | None = None
        self.cuda_graph = cuda_graph
        if compile:
            how = "one compiled graph" if self.unfused is None else f"compiled net, backward and update outside ({self.unfused})"
            log.info(f"Training iteration: {how}")
        #: Compiled: the train net's dropout layers, whose masks the solver draws before each
        #: forward, so that compiled and eager code multiply by the same ones (layers.dropout).
        self._dropouts = [layer for layer in self.net.layers if isinstance(layer, Dropout) and layer.drops] if compile else []
        for layer in self._dropouts:
            layer.use_masks(device)
        #: The first compiled iteration, and the first batch of each test net, are yet to be
        #: checked against eager code (`_checked_iteration`, `_checked_test_batch`).
        self._check_pending = bool(compile)
        self._tests_unchecked = set(range(len(self.test_nets))) if compile else set()
        #: What those checks found (their metrics records), in order.
        self.compile_checks: list[dict] = []
        self.sync_weights()

        self.iter = 0
        self.current_step = 0
        #: What the last update's clip of the gradients did (L2 norm, scale), None if nothing.
        self.clipped: tuple[float, float] | None = None
        self.last_snapshot: Path | None = None
        self._snapshot_iter: int | None = None
        self.snapshots = Snapshots(param, folder, log, snapshot_keep)
        #: Called by the snapshot writer's thread once a snapshot's .solverstate is on disk
        #: (`train --force` then deletes the earlier run it moved aside: replicate.solver.aside).
        self.after_snapshot: Callable[[], None] | None = None
        self.snapshots.check_folder(group.is_main)
        #: What signals ask for (see replicate.solver.requests); `train` listens from its start.
        self.requests = requests or req.Requests()
        if group.world > 1:
            self.requests.agree = union_over(group)
        self.stopped_early = False
        #: Stopped by SIGTERM or SIGUSR2: the caller exits with requests.EXIT_REQUEUE.
        self.requeued = False
        self._test_positions: Positions | None = None
        self.monitor = LossMonitor(param.average_loss, device)
        log.info("Solver scaffolding done.")

    # ------------------------------------------------------------------ helpers
    def close(self) -> None:
        """Finish the snapshot being written and stop the data layers' worker processes
        (training can go on: they restart)."""
        try:
            self.snapshots.wait()
        finally:
            self._close_data()

    def _close_data(self) -> None:
        close_data_layers([self.net, *self.test_nets])
        if getattr(self, "_pool", None) is not None:
            self._pool.close()

    def _compiled(self, program: torch.nn.Module) -> torch.nn.Module:
        return torch.compile(program, backend=self.backend) if self.backend else program

    def sync_weights(self) -> None:
        """Every process of a data-parallel run starts from rank 0's weights."""
        self.group.broadcast_([p.data for blobs in self.net.layer_blobs().values() for p in blobs])

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        if self.precision == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                yield
        else:
            yield

    # ------------------------------------------------------------------ Solve / Step
    def solve(self, resume: Path | None = None, allow_missing: frozenset[str] = frozenset()) -> None:
        """Train to max_iter, from the snapshot `resume` when given (`allow_missing`: layers its
        caffemodel may lack, see replicate.net.copy_check)."""
        self.log.info(f"Solving {self.net.net_name}")
        self.log.info(f"Learning Rate Policy: {self.param.lr_policy}")
        if resume is not None:
            self.restore(resume, allow_missing)
        self.log.record(**self.config, weights=self.weights)
        start_iter = self.iter
        with self.requests.listen():
            self.step(self.param.max_iter - self.iter)
            p = self.param
            caffes = p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0)
            # A requeued run always leaves a snapshot to resume from, whatever snapshot_after_train says.
            requeue = self.requeued and self._snapshot_iter != self.iter
            if (caffes or requeue) and self.group.is_main:
                self.snapshot()
            self.snapshots.wait()  # the final files are on disk before anything says the run ended
            if self.stopped_early:
                self._record_stop()
                self.log.info("Optimization stopped early.", "solver.cpp:302")
                return
            if p.display and self.iter % p.display == 0:
                self._draw_masks()
                with torch.no_grad(), self._autocast():
                    total = self.net().loss.detach().float().reshape(1)
                self.group.mean_([total])
                self.monitor.add(total[0], self.iter, self.iter - start_iter, watch=False)
                smoothed = self._settle().smoothed
                self.log.info(f"Iteration {self.iter}, loss = {caffe_number(smoothed)}", "solver.cpp:320")
            if p.test_interval and self.iter % p.test_interval == 0:
                self.test_all()
            if self.stopped_early:
                # Caffe says "Optimization Done." even when a signal cut its last test short; the
                # run is not done without that test, so it ends stopped and resumes to redo it.
                self._record_stop()
            else:
                self.log.record(kind="done", iter=self.iter)
            self.log.info("Optimization Done.", "solver.cpp:325")

    def _stop(self, request: str) -> None:
        """Act on a STOP or REQUEUE request: training ends after this iteration (or test batch)."""
        self.stopped_early = True
        self.requeued = self.requeued or request == req.REQUEUE

    def _record_stop(self) -> None:
        self.log.record(kind="stopped", iter=self.iter, requeue=self.requeued)
        if self.requeued:
            # In a data-parallel run the signal may have reached another process only.
            signal_name = self.requests.requeue_signal or "a signal to another process of this run"
            self.log.info(f"Stopped by {signal_name} (requeue) at iteration {self.iter}; "
                          f"the job resumes from {self.last_snapshot}")

    def step(self, iters: int) -> None:
        p = self.param
        start_iter, stop_iter = self.iter, self.iter + iters
        self.monitor.restart()
        timer, last_iter = time.perf_counter(), self.iter
        session_start = timer
        train_weights = self.net.blob_loss_weights
        while self.iter < stop_iter:
            if p.test_interval and self.iter % p.test_interval == 0 and (self.iter > 0 or p.test_initialization):
                self._settle()
                self.test_all()
                if self.stopped_early:  # a stop was asked for while testing
                    break
            display = bool(p.display) and self.iter % p.display == 0
            step_before = self.current_step
            loss, rate = self.iteration()
            recorded = display or not p.display
            self.monitor.add(loss, self.iter, self.iter - start_iter, rate if recorded else None)
            if display:
                smoothed = self._settle().smoothed
                lapse = time.perf_counter() - timer
                per_s = (self.iter - last_iter) / (lapse or 1.0)
                self.log.info(
                    f"Iteration {self.iter} ({caffe_number(per_s)} iter/s, {caffe_number(lapse)}s/{p.display} iters), "
                    f"loss = {caffe_number(smoothed)}",
                    "solver.cpp:231",
                )
                timer, last_iter = time.perf_counter(), self.iter
                self._log_outputs("Train", self._last.outputs, train_weights, "solver.cpp:247")
            elif self.monitor.due:
                self._settle()
            self._log_update(display, rate, step_before)
            self.iter += 1
            elapsed = time.perf_counter() - session_start
            self.log.progress(self.iter, p.max_iter, (self.iter - start_iter) / elapsed if elapsed > 0 else 0.0)
            request = self.requests.take()
            if ((p.snapshot and self.iter % p.snapshot == 0) or request == req.SNAPSHOT) and self.group.is_main:
                self._settle()
                self.snapshot()
            if request in (req.STOP, req.REQUEUE):
                self._stop(request)
                break
        self._settle()

    def _settle(self) -> Reading:
        """Read what the loss monitor holds (this waits for the device): write the queued train
        records, and stop at the first iteration whose loss was not finite."""
        reading = self.monitor.read()
        bad = reading.diverged
        for it, rate, loss, smoothed in reading.records:
            if bad is None or it < bad[0]:
                self.log.record(kind="train", iter=it, lr=rate, loss=loss, smoothed_loss=smoothed)
        if bad is not None:
            kept = f"; the last good snapshot is {self.last_snapshot}" if self.last_snapshot else ""
            raise TrainingDiverged(f"iteration {bad[0]}: the loss is {bad[1]}; training stopped{kept}")
        return reading

    def iteration(self, inputs: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, float]:
        """One iteration's forward, backward and update (Caffe's Step body between test and
        snapshot): its loss, on the device, and its learning rate.  `inputs` feed source blobs
        (as CompiledNet.feed), e.g. synthetic batches for a benchmark."""
        if self.unfused is None and self.fused is None:
            # Built at the first iteration, after a restore has set the history it reads.
            self.fused = CompiledIteration(self.net, self.entries, self.rule, self.backend, self._autocast,
                                            self.cuda_graph)
        if self._check_pending:
            self._check_pending = False
            return self._checked_iteration(inputs)
        return self._iteration(inputs)

    def _iteration(
        self, inputs: dict[str, torch.Tensor] | None = None, feeds: list[dict[str, torch.Tensor]] | None = None,
        eager: bool = False,
    ) -> tuple[torch.Tensor, float]:
        """`iteration` by the run's path, or by plain eager code when `eager`; `feeds` are the
        iter_size passes' batches when already made (`CompiledNet.feed`)."""
        if self.fused is None or eager:
            for e in self.entries:
                e.param.grad = None
            loss = self.forward_backward(inputs, feeds, self.net.program if eager else None)
            return loss, self.apply_update()
        rate, self.current_step = learning_rate(self.param, self.iter, self.current_step)
        feed = feeds[0] if feeds else self.net.feed(inputs)
        self._draw_masks()
        loss, outputs = self.fused(feed, rate)
        self._last = ForwardResult(outputs, loss)
        return loss, rate

    def _checked_iteration(self, inputs: dict[str, torch.Tensor] | None) -> tuple[torch.Tensor, float]:
        """The first compiled iteration, checked against eager code on the same batches
        (replicate.solver.compile_check.check_iteration): the run goes on from the compiled
        outcome if it passes, exactly as without the check; if not, from the eager one, eager
        from then on, with a warning in the log and in metrics.jsonl."""
        feeds = [self.net.feed(inputs) for _ in range(self.param.iter_size)]
        step = self.current_step

        def run(eager: bool) -> tuple[torch.Tensor, tuple[float, ForwardResult]]:
            self.current_step = step
            loss, rate = self._iteration(feeds=feeds, eager=eager)
            return loss, (rate, self._last)

        state = [e.param.data for e in self.entries] + list(self.rule.history)
        check = compile_check.check_iteration(run, state, self.precision, self.device, self.group, self._use_precision)
        rate, self._last = check.kept
        for e in self.entries:
            e.param.grad = None  # the one-graph iteration keeps no gradients between iterations
        self._report_check("training iteration", check.verdict, check.seconds)
        return check.loss, rate

    def _use_precision(self, precision: str) -> None:
        """Run at `precision` from here on: torch's matmul settings and this solver's autocast
        (the checks run eager code in fp32 through it: compile_check.caffe_arithmetic)."""
        set_precision(precision)
        self.precision = precision

    def _checked_test_batch(
        self, index: int, feed: dict[str, torch.Tensor], compiled: compile_check.TestResult
    ) -> compile_check.TestResult:
        """The first compiled batch of test net `index`, checked against its eager program
        (replicate.solver.compile_check.check_test_batch); the eager result where they differ."""
        result, verdict, seconds = compile_check.check_test_batch(
            self.test_nets[index].program, feed, compiled, self.precision, self.device, self.group, self._use_precision
        )
        self._report_check(f"test net #{index}", verdict, seconds)
        return result

    def _report_check(self, what: str, verdict: compile_check.Verdict, seconds: float) -> None:
        """Record a check (compile_check.report); a failed one turns the run eager."""
        self.compile_checks.append(
            compile_check.report(self.log, what, verdict, self.iter, self.precision, self.backend, seconds)
        )
        if verdict.passed:
            return
        self.fused = None
        self.unfused = f"the compiled {what} failed its check against eager"
        self._program = self.net.program
        self._test_programs = [net.program for net in self.test_nets]
        self._check_pending, self._tests_unchecked = False, set()

    def _draw_masks(self) -> None:
        """The next dropout masks of the train net, when the solver draws them (compiled runs)."""
        for layer in self._dropouts:
            layer.draw_mask()

    def forward_backward(
        self, inputs: dict[str, torch.Tensor] | None = None, feeds: list[dict[str, torch.Tensor]] | None = None,
        program: torch.nn.Module | None = None,
    ) -> torch.Tensor:
        """iter_size forward/backward passes accumulating gradients; their mean loss, left on the
        device.  In a data-parallel run gradients and loss are then averaged over the processes.
        `feeds` are the passes' batches when already made; `program` runs them instead of the
        run's (compiled or not) one."""
        program = program or self._program
        total = torch.zeros((), device=self.device)
        passes = self.param.iter_size
        for i in range(passes):
            if self._averager is not None:
                self._averager.armed = i == passes - 1
            feed = feeds[i] if feeds else self.net.feed(inputs)
            self._draw_masks()
            with self._autocast():
                loss, outputs = program(feed)
            if loss is None:
                loss = torch.zeros((), device=self.device)
            self._last = ForwardResult(outputs, loss)
            if loss.requires_grad:
                loss.backward()
            total += loss.detach().float()
        total /= passes
        if self._averager is not None:
            self._averager.finish()
            loss = total.reshape(1)
            self.group.mean_([loss])
            total = loss[0]
        return total

    def _log_outputs(self, which: str, outputs: dict[str, torch.Tensor], weights: dict[str, float], source: str) -> None:
        k = 0
        for name, value in outputs.items():
            for v in value.detach().float().reshape(-1).cpu().tolist():
                self.log.info(f"    {which} net output #{k}: {output_text(name, v, weights.get(name, 0.0))}", source)
                k += 1

    def _log_update(self, display: bool, rate: float, step_before: int) -> None:
        """The lines Caffe's ApplyUpdate logs, in its order: a multistep policy's new step
        (GetLearningRate), the rate on a display iteration, a clip of the gradients."""
        if self.param.lr_policy == "multistep" and self.current_step != step_before:
            self.log.info(f"MultiStep Status: Iteration {self.iter}, step = {self.current_step}", "sgd_solver.cpp:50")
        if display:
            self.log.info(f"Iteration {self.iter}, lr = {caffe_number(rate)}", "sgd_solver.cpp:106")
        if self.clipped is not None:
            norm, scale = self.clipped
            self.log.info(f"Gradient clipping: scaling down gradients (L2 norm {caffe_number(float(np.float32(norm)))} > "
                          f"{caffe_number(float(np.float32(self.param.clip_gradients)))}) by scale factor "
                          f"{caffe_number(scale)}", "sgd_solver.cpp:99")

    def apply_update(self) -> float:
        """Caffe's ApplyUpdate with the gradients forward_backward left; returns the rate (and
        keeps in `clipped` what a clip of the gradients did, for the log)."""
        rate, self.current_step = learning_rate(self.param, self.iter, self.current_step)
        params, grads = [], []
        for e in self.entries:
            params.append(e.param.data)
            grads.append(e.param.grad if e.param.grad is not None else torch.zeros_like(e.param.data))
        with torch.no_grad():
            self.clipped = self.rule.apply(
                params, grads, [e.lr_mult for e in self.entries], [e.decay_mult for e in self.entries],
                rate, self.iter,
            )
        return rate

    # ------------------------------------------------------------------ testing
    def test_all(self) -> None:
        """Every test net, unless a stop is asked for.  A snapshot taken meanwhile records where
        the test nets' data stood before this round of tests, which a resumed run repeats; a stop
        puts them back there."""
        before = snapshots.data_positions(self.test_nets)
        self._test_positions = before
        try:
            for i in range(len(self.test_nets)):
                if self.stopped_early:
                    break
                self.test(i)
        finally:
            self._test_positions = None
        if self.stopped_early:
            for net, positions in zip(self.test_nets, before):
                for layer, position in zip(data_layers([net]), positions):
                    layer.seek(position)

    def _requests_in_test(self) -> bool:
        """Caffe's check before each test batch: snapshot on request, and whether to stop testing."""
        while (request := self.requests.take()) is not None:
            if request == req.SNAPSHOT:
                if self.group.is_main:
                    self.snapshot()
            else:
                self._stop(request)
        return self.stopped_early

    def test(self, index: int, inputs: dict[str, torch.Tensor] | None = None) -> dict[str, list[float]] | None:
        """Caffe's Solver::Test: outputs summed in float over test_iter batches, then averaged;
        None when a stop request cut it short ("Test interrupted.").  The sums stay on the
        device, added in Caffe's order, and are read once at the end."""
        net, program = self.test_nets[index], self._test_programs[index]
        iters = self.param.test_iter[index]
        self.log.info(f"Iteration {self.iter}, Testing net (#{index})", "solver.cpp:346")
        sums: dict[str, torch.Tensor] = {}
        loss = torch.zeros((), device=self.device)
        with torch.no_grad(), self._autocast():
            for _ in range(iters):
                if self._requests_in_test():
                    self.log.info("Test interrupted.", "solver.cpp:385")
                    return None
                feed = net.feed(inputs)
                batch_loss, outputs = program(feed)
                if index in self._tests_unchecked:
                    self._tests_unchecked.discard(index)
                    batch_loss, outputs = self._checked_test_batch(index, feed, (batch_loss, outputs))
                    program = self._test_programs[index]
                if self.param.test_compute_loss and batch_loss is not None:
                    loss += batch_loss.float()
                for name, value in outputs.items():
                    flat = value.detach().float().reshape(-1)
                    sums[name] = flat.clone() if name not in sums else sums[name].add_(flat)
        totals = torch.cat([loss.reshape(1), *sums.values()])
        self.group.mean_([totals])
        host = totals.cpu().numpy()
        if self.param.test_compute_loss:
            self.log.info(f"Test loss: {caffe_number(float(host[0] / np.float32(iters)))}", "solver.cpp:394")
        means, offset = {}, 1
        for name, total in sums.items():
            means[name] = (host[offset:offset + total.numel()] / np.float32(iters)).astype(np.float32)
            offset += total.numel()
        weights = net.blob_loss_weights
        k = 0
        for name, values in means.items():
            for v in values.tolist():
                self.log.info(f"    Test net output #{k}: {output_text(name, v, weights.get(name, 0.0))}", "solver.cpp:413")
                k += 1
        outputs = {name: (v.tolist()[0] if v.size == 1 else v.tolist()) for name, v in means.items()}
        self.log.record(kind="test", iter=self.iter, net=index, outputs=outputs)
        return {name: v.tolist() for name, v in means.items()}

    # ------------------------------------------------------------------ snapshots
    def snapshot(self) -> Path:
        """Caffe's Solver::Snapshot (replicate.solver.snapshots), of weights an update has left
        finite; returns the .solverstate's path.  Mid-test (a SIGHUP while testing) the sidecar
        records where the test nets' data stood before this round of tests, which a resumed run
        repeats.  Call `close()` (or let `solve()` end) to be sure the files are on disk."""
        self._check_finite()
        self.last_snapshot = self.snapshots.write(
            self.iter, self.current_step, [self.net, *self.test_nets], self.rule.history, self.device,
            self._test_positions, self.after_snapshot,
        )
        self._snapshot_iter = self.iter
        return self.last_snapshot

    def _check_finite(self) -> None:
        """Refuse to snapshot weights an update has made NaN or infinite: the last good one stays."""
        finite = torch.stack([torch.isfinite(e.param.detach()).all() for e in self.entries]).tolist()  # one sync
        for e, ok in zip(self.entries, finite):
            if not ok:
                kept = f"; the last good snapshot is {self.last_snapshot}" if self.last_snapshot else ""
                raise TrainingDiverged(
                    f"iteration {self.iter}: the update made {e.layer} param {e.index} non-finite; "
                    f"training stopped{kept}"
                )

    def restore(self, state_path: Path, allow_missing: frozenset[str] = frozenset()) -> None:
        """Caffe's Solver::Restore from `state_path` (replicate.solver.snapshots.restore): weights,
        history, iteration and lr step, then data positions and random streams when the snapshot
        has a resume sidecar."""
        restored = snapshots.restore(state_path, [self.net, *self.test_nets], self.rule.history, self.device,
                                     self.log, allow_missing)
        self.iter, self.current_step = restored.iter, restored.current_step
        if restored.weights is not None:
            self.weights = restored.weights
