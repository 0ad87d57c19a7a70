"""The classroom bench's timing hook inside the Streamlit server (never part of the app).

``bench/classroom.py`` puts this folder first on the server's PYTHONPATH with ``UE_BENCH_TIMING_LOG`` set; Python
then imports it at start-up. In the Streamlit process only, it appends one line per event to that file:

    click <unix time> <session id>   the rerun request of a click on the Forget button reached the server
    result <unix time> <session id>  the frame holding an SPM result ("... samples from the memory in ...") was
                                     handed to that browser's websocket
    rerun <unix time> <session id>   a rerun request of the whole page reached the server (a link to another
                                     page is one; a fragment's is not)
    table <unix time> <session id>   the frame holding the Predictions page's metrics table's export button was
                                     handed to that browser's websocket

so that a Forget click's time, and a Predictions link's, can be split into the server's part and the browser's
(both share this machine)."""

import os
import sys
import threading
import time

LOG = os.environ.get("UE_BENCH_TIMING_LOG")
MARKER = " samples from the memory in "
BUTTON = "forget-go"  # the Forget button's key, which ends its widget id
TABLE = "Export this table (CSV)"  # the label of the button right under the Predictions page's metrics table


def _install(path: str) -> None:
    from streamlit.runtime import app_session, runtime

    out, lock = open(path, "a", buffering=1), threading.Lock()

    def write(kind: str, session_id: str) -> None:
        with lock:
            out.write(f"{kind} {time.time():.6f} {session_id}\n")

    handle_backmsg, send_message = app_session.AppSession.handle_backmsg, runtime.Runtime._send_message

    def timed_backmsg(self, msg):
        if msg.WhichOneof("type") == "rerun_script":
            if any(w.id.endswith(BUTTON) and w.WhichOneof("value") == "trigger_value" and w.trigger_value
                   for w in msg.rerun_script.widget_states.widgets):
                write("click", self.id)
            if not msg.rerun_script.fragment_id:
                write("rerun", self.id)
        return handle_backmsg(self, msg)

    def timed_send(self, session_info, msg):
        if msg.WhichOneof("type") == "delta":
            element = msg.delta.new_element
            if MARKER in element.alert.body:
                write("result", session_info.session.id)
            elif element.download_button.label == TABLE:
                write("table", session_info.session.id)
        return send_message(self, session_info, msg)

    app_session.AppSession.handle_backmsg = timed_backmsg
    runtime.Runtime._send_message = timed_send


if LOG and "streamlit" in " ".join(sys.orig_argv):
    _install(LOG)
