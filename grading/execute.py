"""nbgrader's Execute preprocessor with guards, so one bad cell costs only its own points.

nbgrader already records an exception in a cell and goes on (allow_errors), and interrupts a
cell that runs past `Execute.timeout`. Two cases still lose a whole notebook or hang:

- output that floods in (an endless `print` loop) is all kept in memory until the cell ends;
  here each cell keeps at most `max_output_chars` characters of printed text, and a single
  result or display whose text is longer is cut to that length;
- a kernel that dies (`exit()`, `os._exit`, a crash, out of memory) or ignores the interrupt
  (a bare `except:` around an endless loop) stops the notebook. Here the cell gets an error,
  the kernel is restarted, the cells before it are run again quietly to rebuild their state,
  and the notebook goes on. After `max_restarts` restarts, every cell left gets an error;
- a lost execute reply (the kernel finished the cell and went idle, but its reply on the shell
  channel never reached nbclient) made nbclient wait for the cell's whole time limit. Here the
  reply is awaited in short slices; once the kernel has been idle after the cell, with all its
  output in, for `lost_reply_grace` seconds, the reply is taken as lost, the cell counts as
  finished, and the cell's index is listed in `lost_replies` (the grader reports it).
"""

from __future__ import annotations

import asyncio
import copy
from queue import Empty
from time import monotonic

from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbclient.util import ensure_async, run_sync
from nbconvert.preprocessors import ExecutePreprocessor
from nbformat import NotebookNode
from nbformat.v4 import new_output
from traitlets import Bool, Dict, Float, Integer, List

TRUNCATED = "\n... output truncated by the grader: more than {n:,} characters ...\n"


def _error(ename: str, evalue: str) -> dict:
    """An error output, which makes a graded cell score 0."""
    return new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def _nbgrader_cell(cell, key: str) -> bool:
    """nbgrader's is_solution / is_grade (without importing nbgrader: seconds per sandbox)."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return bool(meta.get(key)) if isinstance(meta, dict) else False


def is_solution(cell) -> bool:
    return _nbgrader_cell(cell, "solution")


def is_grade(cell) -> bool:
    return _nbgrader_cell(cell, "grade")


class Execute(ExecutePreprocessor):
    """nbgrader's Execute preprocessor (nbgrader 0.9), restated on nbconvert's.

    The runner in the sandbox imports this module; importing nbgrader there would cost each
    notebook a few seconds. Same traits, defaults and error bookkeeping as nbgrader's.
    """

    timeout = Integer(30, help=ExecutePreprocessor.timeout.help, allow_none=True).tag(config=True)
    interrupt_on_timeout = Bool(True, help=ExecutePreprocessor.interrupt_on_timeout.help).tag(
        config=True
    )
    allow_errors = Bool(True, help="Go on after a cell raises (its error is its output).")
    raise_on_iopub_timeout = Bool(True, help=ExecutePreprocessor.raise_on_iopub_timeout.help).tag(
        config=True
    )
    error_on_timeout = Dict(
        default_value={
            "ename": "CellTimeoutError",
            "evalue": "",
            "traceback": ["\x1b[0;31mCellTimeoutError\x1b[0m: No reply from kernel before timeout"],
        },
        help=ExecutePreprocessor.error_on_timeout.help,
    ).tag(config=True)
    extra_arguments = List([], help="Extra arguments for the kernel.").tag(config=True)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("kernel_manager_class", AsyncKernelManager)
        super().__init__(*args, **kwargs)

    def on_cell_executed(self, **kwargs):
        """An error reply without its error among the outputs (a timeout) becomes one."""
        cell, reply = kwargs["cell"], kwargs["execute_reply"]
        if reply["content"]["status"] != "error":
            return
        ename = reply["content"].get("ename")
        if any(o.output_type == "error" and o.get("ename") == ename for o in cell.outputs):
            return
        error = NotebookNode(output_type="error")
        error.ename, error.evalue = ename, reply["content"].get("evalue", "")
        error.traceback = reply["content"].get("traceback") or [
            "ERROR: An error occurred while showtraceback was disabled"
        ]
        cell.outputs.append(error)


class GuardedExecute(Execute):
    """Execute with bounded output and recovery from a dead or unresponsive kernel.

    Exercise cells (nbgrader solution and grade cells) run learner code and get `timeout`
    seconds; the other cells, the course's story (training runs included), get `story_timeout`.
    """

    story_timeout = Integer(
        1200, help="Seconds a cell that is not an exercise or check cell may run."
    ).tag(config=True)

    max_output_chars = Integer(
        100_000, help="Text output kept per cell while it runs; the rest is dropped."
    ).tag(config=True)

    interrupt_grace = Integer(
        10, help="Seconds a timed-out cell's kernel has to answer after the interrupt."
    ).tag(config=True)

    max_restarts = Integer(2, help="Kernel restarts per notebook before giving up.").tag(
        config=True
    )

    lost_reply_grace = Float(
        5.0,
        help="Seconds to wait for a cell's reply once the kernel is idle with its output in.",
    ).tag(config=True)

    reply_poll_interval = Float(0.5, help="Seconds per wait for the shell reply.").tag(config=True)

    def preprocess(self, nb, resources=None, km=None):
        """Run the notebook, tracking text output, cells run, and kernel restarts."""
        self._chars: dict[int, int] = {}
        self._ran: list[int] = []
        self._exited: set[int] = set()
        self._restarts = 0
        self._gave_up = False
        self.lost_replies: list[int] = []
        self._index = -1
        return super().preprocess(nb, resources, km)

    def preprocess_cell(self, cell, resources, index):
        """Run one cell; on a dead or stuck kernel, record it, restart and go on."""
        if cell.cell_type != "code" or not cell.source.strip():
            return super().preprocess_cell(cell, resources, index)
        if self._gave_up:
            cell.outputs = [_error("NotRun", "not run: the kernel died earlier in this notebook")]
            return cell, self.resources
        self._index = index
        try:
            cell, resources = super().preprocess_cell(cell, resources, index)
        except DeadKernelError:
            cell.outputs.append(
                _error(
                    "KernelDied",
                    "the kernel died while running this cell (exit(), os._exit, a crash or "
                    "running out of memory?)",
                )
            )
            self._recover()
            return cell, self.resources
        if index in self._exited:  # exit() ends the kernel once the cell's reply is sent
            self._recover()
            return cell, self.resources
        timed_out = any(
            o.output_type == "error" and o.ename == "CellTimeoutError" for o in cell.outputs
        )
        if timed_out and not self._responsive():
            cell.outputs.append(
                _error("KernelUnresponsive", "the kernel ignored the interrupt and was restarted")
            )
            self._recover()
            return cell, self.resources
        if not timed_out:  # cells to rerun after a restart
            self._ran.append(index)
        return cell, resources

    def on_cell_executed(self, **kwargs):
        """nbgrader's bookkeeping, plus: a cell that called exit() gets an error."""
        super().on_cell_executed(**kwargs)
        payload = kwargs["execute_reply"].get("content", {}).get("payload", [])
        if any(p.get("source") == "ask_exit" for p in payload):
            self._exited.add(kwargs["cell_index"])
            kwargs["cell"].outputs.append(
                _error("KernelExit", "this cell called exit() or quit(), which stops the kernel")
            )

    def _get_timeout(self, cell):
        """The exercise-cell limit for nbgrader cells, the story limit for the others."""
        if cell is not None and not (is_solution(cell) or is_grade(cell)):
            return self.story_timeout if self.story_timeout > 0 else None
        return super()._get_timeout(cell)

    def output(self, outs, msg, display_id, cell_index):
        """Keep at most max_output_chars of printed text per cell, and of any one result."""
        content, limit = msg.get("content", {}), self.max_output_chars
        if msg["msg_type"] == "stream":
            text = content.get("text", "")
            used = self._chars.get(cell_index, 0)
            self._chars[cell_index] = used + len(text)
            if used >= limit:
                return None
            if used + len(text) > limit:
                msg = copy.deepcopy(msg)
                msg["content"]["text"] = text[: limit - used] + TRUNCATED.format(n=limit)
        else:
            text = content.get("data", {}).get("text/plain")
            if isinstance(text, str) and len(text) > limit:
                msg = copy.deepcopy(msg)
                msg["content"]["data"] = {"text/plain": text[:limit] + TRUNCATED.format(n=limit)}
        return super().output(outs, msg, display_id, cell_index)

    async def _async_poll_for_reply(
        self, msg_id, cell, timeout, task_poll_output_msg, task_poll_kernel_alive
    ):
        """nbclient's wait for the execute reply, in short slices, with a lost reply detected.

        The kernel is idle after the cell once the output poller has seen its `idle` status;
        if no reply has come `lost_reply_grace` seconds later, one is made up (status ok; an
        error the cell raised is already among its outputs).
        """
        deadline = None if timeout is None else monotonic() + timeout
        idle_since = None
        while True:
            wait = self.reply_poll_interval
            if deadline is not None:
                wait = max(0.0, min(wait, deadline - monotonic()))
            try:
                msg = await ensure_async(self.kc.shell_channel.get_msg(timeout=wait))
            except Empty:
                if task_poll_output_msg.done() and not task_poll_output_msg.cancelled():
                    idle_since = idle_since if idle_since is not None else monotonic()
                    if monotonic() - idle_since >= self.lost_reply_grace:
                        self.log.warning(
                            "Cell %d: the kernel is idle but its reply never came; "
                            "the cell is taken as finished",
                            self._index,
                        )
                        self.lost_replies.append(self._index)
                        task_poll_kernel_alive.cancel()
                        return {
                            "parent_header": {"msg_id": msg_id},
                            "header": {"msg_type": "execute_reply"},
                            "metadata": {},
                            "content": {"status": "ok", "payload": []},
                        }
                if deadline is not None and monotonic() >= deadline:
                    break
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                await self._await_output(task_poll_output_msg, cell)
                task_poll_kernel_alive.cancel()
                return msg
        # past the cell's time limit: nbclient's own handling (interrupt, then an error reply)
        task_poll_kernel_alive.cancel()
        await self._async_check_alive()
        reply = await self._async_handle_timeout(timeout, cell)
        if reply is None:
            raise CellTimeoutError.error_from_timeout_and_cell(
                "Cell execution timed out", timeout, cell
            )
        reply["parent_header"] = {"msg_id": msg_id}
        await self._await_output(task_poll_output_msg, cell)
        return reply

    async def _await_output(self, task_poll_output_msg, cell) -> None:
        """Give the cell's output iopub_timeout seconds to arrive after its reply."""
        try:
            await asyncio.wait_for(task_poll_output_msg, self.iopub_timeout)
        except (TimeoutError, Empty):
            if self.raise_on_iopub_timeout:
                raise CellTimeoutError.error_from_timeout_and_cell(
                    "Timeout waiting for IOPub output", self.iopub_timeout, cell
                ) from None
            self.log.warning("Timeout waiting for IOPub output")

    def _responsive(self) -> bool:
        """True if the kernel answers a kernel_info request within interrupt_grace seconds."""
        msg_id = self.kc.kernel_info()
        deadline = monotonic() + self.interrupt_grace
        while (left := deadline - monotonic()) > 0:
            try:
                msg = run_sync(self.kc.shell_channel.get_msg)(timeout=left)
            except Empty:
                return False
            if msg["parent_header"].get("msg_id") == msg_id:
                return True
        return False

    def _recover(self) -> None:
        """Restart the kernel and rerun the cells that ran before, keeping their outputs."""
        if self._restarts >= self.max_restarts:
            self._gave_up = True
            return
        self._restarts += 1
        self.log.warning("Restarting the kernel and rerunning %d cells", len(self._ran))
        self.kc.stop_channels()
        run_sync(self.km.restart_kernel)(now=True)
        self.kc = None
        self.start_new_kernel_client()
        for i in self._ran:
            scratch = copy.deepcopy(self.nb.cells[i])
            try:
                self.execute_cell(scratch, i, store_history=True)
            except DeadKernelError:
                self._gave_up = True
                return
