"""Rolling expiry as a client lives it (issue 22 item 7): an active client is never signed
out by expiry, neither by the server nor by its browser.

DESIGN.md "Expiry": with ``save_every_request=True`` renewals are throttled to one per
``renew_interval``, never more than a tenth of the idle window ``W`` that applies to the
session (``set_expiry(n)``, the stored setting, or ``max_age``). A request that skips its
renewal found the record written less than ``I = min(renew_interval, W / 10)`` ago, so the
record ends at least ``W - I`` after it; the cookie it holds ends with the record (its
``Max-Age`` counted from the response that carried the record's last write).

Precisely, checked after every response the model predicts:

- a *kept promise*: a 2xx response, with ``save_every_request``, after which the client's
  cookie names the record this request holds, alive, with an idle window (no fixed
  moment), which nothing wrote since this request loaded or wrote it (a concurrent request
  of the same browser that changed it answers for its own response), and whose last write
  the cookie carries (a 5xx after an explicit save writes without sending the cookie);
  a request that sent an old library's cookie (importers) is a migration, not activity;
- it promises the session until ``B = min(now + W - I, created + absolute_timeout)``: the
  record and the cookie (no ``Max-Age``: until the browser closes) must both live until
  then. So a client whose every request starts before the promise of its previous
  response runs out (gaps under ``W - I``, nine tenths of its window or more) is *active*,
  and it never finds its session expired.

Because the bound comes from the contract's cap and not from the model's own renewal
rule, a model that predicted renewals by the wrong interval would fail here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.model.records import idle_window
from tests.model.rules import Outcome, RequestModel, Rules


@dataclass
class Activity:
    """Each client's cookie as its browser keeps it, on the model's clock."""

    cookies: dict[int, tuple[int, float | None, float]] = field(default_factory=dict)
    """client -> (record, when the cookie ends or None, the record's write it carries:
    ``Record.writes``)."""

    def responded(self, model: Rules, req: RequestModel, expected: Outcome) -> str | None:
        """Note the response's cookie; the broken promise, if any, as a divergence."""
        client, now = req.spec.client, model.now
        if expected.cookie == "set" and expected.rid in model.records:
            ends = None if expected.max_age is None else now + expected.max_age
            self.cookies[client] = (expected.rid, ends, model.records[expected.rid].writes)
        elif expected.cookie == "delete":
            self.cookies.pop(client, None)
        options = model.options
        rid = model.jars[client]
        cookie = self.cookies.get(client)
        record = model.records.get(rid) if isinstance(rid, int) else None
        if not (options.save_every_request and expected.status < 300) or record is None:
            return None
        held = req.held
        if (
            getattr(req, "imp", None) is not None  # it sent an old library's cookie
            or cookie is None
            or cookie[0] != rid
            or cookie[2] != record.writes
            or not record.alive(now)
            or (record.expiry or "").startswith("a:")
            or held.rid != rid
            or held.writes != record.writes
        ):
            return None
        window = idle_window(options, record.expiry)
        interval = min(options.renew_interval, window / 10)
        bound = now + window - interval
        if options.absolute_timeout is not None:
            bound = min(bound, record.created_at + options.absolute_timeout)
        model.note(
            f"R{req.number} client {client} active until t+{bound - model.start:g}s",
            "active client",
        )
        ends = cookie[1]
        if record.expires_at < bound or (ends is not None and ends < bound):
            shown = "no Max-Age" if ends is None else f"t+{ends - model.start:g}s"
            return (
                f"client {client} is active (window {window} s, renewals at most every "
                f"{interval:g} s) but its session {record.label()} ends at "
                f"t+{record.expires_at - model.start:g}s and its cookie at {shown}, before "
                f"t+{bound - model.start:g}s: a request within the window would find it "
                "expired"
            )
        return None
