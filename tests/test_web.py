"""The web console (``bureaucrat-web``), as its users meet it.

First without a browser, through Starlette's test client, on a real store that the service fills
(SQLite) and the real broker: the JSON API, paging and filters, escaping of hostile values, the
diagram's layout, and who may operate (token, session, CSRF, Origin). Operations are checked by
their outcome: the control message that arrives on the engine's queue, or none.

Then in a real headless Chromium (``tests/browser.py``) against the console and a real daemon:
list, filter, open an instance, watch its running action turn done without a reload, terminate
it from the page with the token, and be refused without it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pika
import pytest
from lxml import etree
from starlette.testclient import TestClient

from bureaucrat.config import Config, load_config
from bureaucrat.definition import parse_definition
from bureaucrat.errors import ConfigError
from bureaucrat.service import Service
from bureaucrat.store import Store
from bureaucrat.web import create_app
from bureaucrat.web.diagram import draw
from tests.brokers import AMQP_URL, require_rabbitmq
from tests.browser import ConsoleServer, Participants, find_chromium
from tests.harness import ROOT, Installation
from tests.store_fixtures import postgres_url, store, store_url
from tests.test_service import Message, Recorder

__all__ = ["postgres_url", "store", "store_url"]  # fixtures, imported for pytest

TOKEN = "a-test-token-of-32-characters-xx"
HOST = "http://console.test"
HOSTILE = "<script>alert('x')</script>"
WAITING = """<process name="approval">
  <context><property name="amount" type="int">100</property></context>
  <action participant="review"/>
  <all>
    <action participant="left"/>
    <assign property="right">context["amount"] &lt; 500</assign>
  </all>
</process>"""


class Filled:
    """A store filled through the service (no daemon): its config, its service and its outbox."""

    def __init__(self, install: Installation) -> None:
        self.install = install
        self.config = install.config
        self.store: Store = install.store
        self.now = [1_800_000_000.0]
        self.outbox = Recorder()
        self.service = Service(self.store, self.config, self.outbox, clock=lambda: self.now[0])

    def launch(self, source: str, process_id: str, **fields: Any) -> str:
        body = json.dumps({"definition": source, "fields": fields}).encode()
        self.service.handle(Message(self.config.launch_queue, body, process_id))
        self.now[0] += 60
        return process_id

    def answer_all(self, **changes: Any) -> None:
        for message in list(self.outbox.sent):
            if message.routing_key.startswith(self.config.worker_queue_prefix):
                body = json.loads(message.body)
                body["payload"].update(status="done", **changes)
                encoded = json.dumps(body).encode()
                self.service.handle(Message(self.config.message_queue, encoded, None))
        self.outbox.sent.clear()

    def client(self, token: str | None = TOKEN) -> TestClient:
        app = create_app(replace(self.config, web_token=token), store=self.store)
        return TestClient(app, base_url=HOST)

    def control_messages(self, settle: float = 0.3) -> list[dict[str, Any]]:
        """The control messages that reached the engine's message queue (taken from it)."""
        found: list[dict[str, Any]] = []
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        try:
            channel = connection.channel()
            deadline = time.monotonic() + settle
            while time.monotonic() < deadline:
                method, _props, body = channel.basic_get(self.config.message_queue, auto_ack=True)
                if method is None:
                    time.sleep(0.02)
                    continue
                found.append(json.loads(body))
        finally:
            connection.close()
        return found


@pytest.fixture
def filled(sqlite_installation: Installation) -> Filled:
    return Filled(sqlite_installation)


def sign_in(client: TestClient, token: str = TOKEN) -> Any:
    return client.post(
        "/login",
        data={"token": token, "next": "/instances"},
        headers={"Origin": HOST},
        follow_redirects=False,
    )


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match is not None, "no CSRF field on the page"
    return match.group(1)


# what the console reads from the store, on both databases ---------------------------------------


def test_the_reads_behind_the_console(store: Store) -> None:
    config = Config()
    outbox = Recorder()
    now = [1_800_000_000.0]
    service = Service(store, config, outbox, clock=lambda: now[0])

    def launch(source: str, process_id: str, **fields: Any) -> None:
        body = json.dumps({"definition": source, "fields": fields}).encode()
        service.handle(Message(config.launch_queue, body, process_id))
        now[0] += 10

    waits = """<process name="waits"><all>
      <delay duration="60"/><await event="go"/><call process="$child"/>
    </all></process>"""
    launch(waits, "w_1%", child="<process/>")
    launch(waits, "w_10", child="<process/>")
    launch("<process name='other'/>", "x-1")
    assert store.instance_version("w_1%") == (1, "running", now[0] - 30)
    assert store.instance_version("nobody") is None
    assert [t.kind for t in store.timers_of("w_1%")] == ["delay"]
    assert store.subscriptions_of("w_1%") == [("w_1%_0_1", "go")]
    assert [r.id for r in store.list_instances(id_prefix="w_1%")] == ["w_1%"]  # % is no joker
    assert [r.id for r in store.list_instances(id_prefix="w_1")] == ["w_1%", "w_10"]
    assert [r.id for r in store.list_instances(id_prefix="w%1")] == []
    for message in list(outbox.sent):  # the subprocesses start
        if message.routing_key == config.launch_queue:
            service.handle(Message(message.routing_key, message.body, message.message_id))
    (child,) = store.children_of("w_1%")
    assert child.parent_id == "w_1%" and child.parent_activity == "w_1%_0_2"
    definitions = {d.name: d for d in store.list_definitions()}
    assert definitions["waits"].instances == 2 and definitions["other"].instances == 1
    digest = definitions["waits"].hash
    assert store.definition_source(digest) == waits
    assert store.definition_source("0" * 64) is None
    assert [r.id for r in store.list_instances(definition=digest)] == ["w_1%", "w_10"]


# the API ----------------------------------------------------------------------------------------


def test_the_api_lists_instances_by_filters_a_page_at_a_time(filled: Filled) -> None:
    for number in range(5):
        filled.launch(WAITING, f"order-{number}")
    filled.launch('<process name="quick"/>', "quick-1")
    with filled.client() as client:
        first = client.get("/api/instances?limit=2").json()
        assert [i["id"] for i in first["instances"]] == ["order-0", "order-1"]
        second = client.get(f"/api/instances?limit=2&after={first['next']}").json()
        assert [i["id"] for i in second["instances"]] == ["order-2", "order-3"]
        last = client.get(f"/api/instances?limit=2&after={second['next']}").json()
        assert [i["id"] for i in last["instances"]] == ["order-4", "quick-1"]
        assert last["next"] is None
        completed = client.get("/api/instances?status=completed").json()["instances"]
        assert [(i["id"], i["name"]) for i in completed] == [("quick-1", "quick")]
        named = client.get("/api/instances?name=approval").json()["instances"]
        assert len(named) == 5
        assert [i["id"] for i in client.get("/api/instances?id=quick").json()["instances"]] == [
            "quick-1"
        ]
        since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(filled.now[0] - 150))
        recent = client.get(f"/api/instances?since={since}").json()["instances"]
        assert [i["id"] for i in recent] == ["order-4", "quick-1"]
        assert client.get("/api/instances?status=sleeping").status_code == 400
        assert client.get("/api/instances?after=nobody").status_code == 400


def test_the_api_gives_an_instance_with_its_tree_context_workitems_and_journal(
    filled: Filled,
) -> None:
    filled.launch(WAITING, "order-1", customer="Ada")
    with filled.client() as client:
        shown = client.get("/api/instances/order-1").json()
        assert shown["status"] == "running" and shown["name"] == "approval"
        assert shown["context"] == {"amount": 100, "customer": "Ada"}
        assert [w["participant"] for w in shown["workitems"]] == ["review"]
        assert shown["tree"]["children"][0]["state"] == "waiting"
        assert shown["tree"]["children"][0]["id"] == "order-1_0"
        assert [e["kind"] for e in shown["journal"]][:2] == ["launched", "dispatched"]
        version = client.get("/api/instances/order-1/version").json()["version"]
        filled.answer_all()
        assert client.get("/api/instances/order-1/version").json()["version"] > version
        journal = client.get("/api/instances/order-1/journal?limit=1").json()["journal"]
        assert len(journal) == 1
        assert client.get("/api/instances/nobody").status_code == 404
        definitions = client.get("/api/definitions").json()["definitions"]
        assert [(d["name"], d["instances"]) for d in definitions] == [("approval", 1)]
        one = client.get(f"/api/definitions/{definitions[0]['hash']}").json()
        assert one["source"] == WAITING
        assert [i["id"] for i in one["instances"]] == ["order-1"]


def test_a_paused_instance_shows_what_it_holds(filled: Filled) -> None:
    filled.launch(WAITING, "order-1")
    pause = {"name": "pause", "process_id": "order-1", "reason": "web console: checking"}
    filled.service.handle(
        Message(filled.config.message_queue, json.dumps(pause).encode(), "pause-1")
    )
    filled.answer_all()
    with filled.client() as client:
        shown = client.get("/api/instances/order-1").json()
        assert (shown["status"], shown["held"]) == ("paused", 1)
        assert shown["journal"][-2]["details"]["reason"] == "web console: checking"
        assert "1 message, applied on resume" in client.get("/instances/order-1").text


def test_pages_show_instances_definitions_and_no_schedules_yet(filled: Filled) -> None:
    filled.launch(WAITING, "order/with?odd#id")
    with filled.client(token=None) as client:
        listing = client.get("/instances").text
        assert "/instances/order%2Fwith%3Fodd%23id" in listing
        page = client.get("/instances/order%2Fwith%3Fodd%23id")
        assert page.status_code == 200
        assert 'data-activity="order/with?odd#id_0"' in page.text
        assert "Terminate" not in page.text  # read-only: no buttons
        assert client.get("/definitions").status_code == 200
        assert "No schedules yet" in client.get("/schedules").text
        assert client.get("/instances/nobody").status_code == 404


def test_a_call_links_to_its_subprocess_and_the_subprocess_back(filled: Filled) -> None:
    child = '<process name="child"><await event="never"/></process>'
    filled.launch(
        '<process name="caller"><call process="$child"/></process>', "caller", child=child
    )
    for message in list(filled.outbox.sent):
        if message.routing_key == filled.config.launch_queue:
            filled.service.handle(
                Message(message.routing_key, message.body, message.properties.get("message_id"))
            )
    (subprocess_record,) = filled.store.children_of("caller")
    child_url = f"/instances/{subprocess_record.id}"
    with filled.client() as client:
        caller = client.get("/instances/caller").text
        diagram = caller[caller.index("<svg") : caller.index("</svg>")]
        assert f'href="{child_url}"' in diagram  # from the call on the diagram
        assert f'<a class="mono" href="{child_url}">' in caller  # and the list of subprocesses
        assert 'href="/instances/caller"' in client.get(child_url).text  # and back
        api = client.get("/api/instances/caller").json()
        assert [c["id"] for c in api["children"]] == [subprocess_record.id]
        assert client.get(f"/api/instances/{subprocess_record.id}").json()["parent"] == "caller"


def test_schedules_are_listed_and_operated(sqlite_installation: Installation) -> None:
    install = sqlite_installation
    install.start_daemon()
    store = install.store
    with install.launcher() as launcher:
        launcher.schedule_add("nightly <b>", REVIEW, cron="0 3 * * *", tz="Europe/Paris")
    install.wait_for(lambda: bool(store.list_schedules()), what="the schedule")
    app = create_app(replace(install.config, web_token=TOKEN), store=install.store)
    with TestClient(app, base_url=HOST) as client:
        page = client.get("/schedules").text
        assert "nightly &lt;b&gt;" in page and "nightly <b>" not in page
        assert "cron 0 3 * * * (Europe/Paris)" in page
        assert 'action="/schedules/nightly%20%3Cb%3E/pause"' not in page  # signed out
        (shown,) = client.get("/api/schedules").json()["schedules"]
        assert (shown["name"], shown["state"], shown["paused"]) == ("nightly <b>", "active", False)
        assert "source" not in shown
        assert client.post("/api/schedules/nightly%20%3Cb%3E/pause").status_code == 403
        sign_in(client)
        page = client.get("/schedules").text
        assert 'action="/schedules/nightly%20%3Cb%3E/pause"' in page
        paused = client.post(
            "/schedules/nightly%20%3Cb%3E/pause",
            data={"csrf": csrf_of(page)},
            headers={"Origin": HOST},
            follow_redirects=False,
        )
        assert paused.status_code == 303
        install.wait_for(lambda: store.list_schedules()[0].paused, what="the pause")
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        resumed = client.post("/api/schedules/nightly%20%3Cb%3E/resume", headers=bearer)
        assert resumed.status_code == 202
        install.wait_for(lambda: not store.list_schedules()[0].paused, what="resume")


def test_pages_fetch_nothing_from_elsewhere_and_allow_no_inline_script(filled: Filled) -> None:
    filled.launch(WAITING, "order-1")
    with filled.client() as client:
        for url in ("/instances", "/instances/order-1", "/definitions", "/schedules", "/login"):
            answer = client.get(url)
            assert not re.search(r"""(src|href)=["']?(https?:)?//""", answer.text), url
            assert "<script>" not in answer.text  # only /static/console.js
            policy = answer.headers["content-security-policy"]
            assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
        for asset in ("/static/console.js", "/static/console.css"):
            served = client.get(asset)
            assert served.status_code == 200 and "http" not in served.text


def test_a_suspended_instance_shows_its_incident(filled: Filled) -> None:
    incident = """<process name="incident" on-fault="suspend">
      <assign property="price">context["base"] * 2</assign>
    </process>"""
    filled.launch(incident, "order-1")
    with filled.client() as client:
        shown = client.get("/api/instances/order-1").json()
        assert shown["status"] == "suspended"
        assert shown["incident"]["code"] == "ExpressionError"
        assert shown["incident"]["activity"] == "order-1_0"
        page = client.get("/instances/order-1").text
        assert "Incident" in page and "ExpressionError" in page
        assert re.search(r'data-path="0"[^>]*data-state="faulted"', page)


# escaping ---------------------------------------------------------------------------------------


def test_hostile_ids_names_context_and_faults_are_shown_as_text(filled: Filled) -> None:
    hostile_definition = f"""<process name="{HOSTILE.replace("<", "&lt;")}">
      <assign property="x">1 &lt; 2</assign>
      <fault code="Bad" message="{HOSTILE.replace("<", "&lt;")}"/>
    </process>"""
    filled.launch(hostile_definition, HOSTILE, note="</pre><img src=x onerror=alert(1)>")
    with filled.client() as client:
        sign_in(client)
        quoted = "%3Cscript%3Ealert%28%27x%27%29%3C%2Fscript%3E"
        for url in ("/instances", f"/instances/{quoted}", f"/instances/{quoted}/fragments"):
            text = client.get(url).text
            assert "<script>alert" not in text and "<img src=x" not in text, url
            assert "&lt;script&gt;alert(" in text, url
        page = client.get(f"/instances/{quoted}").text
        assert "&lt;/pre&gt;&lt;img src=x onerror=alert(1)&gt;" in page
        assert "x = 1 &lt; 2" in page  # the diagram's text too
        assert client.get(f"/api/instances/{quoted}").json()["fault"]["message"] == HOSTILE
        definitions = client.get("/definitions").text
        assert "<script>alert" not in definitions


# the diagram ------------------------------------------------------------------------------------


def _boxes(svg: str) -> dict[str, tuple[float, float]]:
    """The top left corner of each activity's shape in the diagram, by path."""
    tree = etree.fromstring(svg.encode())
    found = {}
    for group in tree.iter("{http://www.w3.org/2000/svg}g"):
        path = group.get("data-path")
        rect = group.find("{http://www.w3.org/2000/svg}rect")
        if path is not None and rect is not None:
            found[path] = (float(rect.get("x", 0)), float(rect.get("y", 0)))
    return found


def test_the_diagram_flows_down_and_puts_branches_and_cases_side_by_side() -> None:
    definition = parse_definition("""<process>
      <action participant="first"/>
      <all><action participant="a"/><action participant="b"/><action participant="c"/></all>
      <switch>
        <case><condition>context["x"] == 1</condition><assign property="y">1</assign></case>
        <default><assign property="y">2</assign></default>
      </switch>
      <while><condition>False</condition><delay duration="1"/></while>
      <call process="$child"/>
    </process>""")
    boxes = _boxes(draw(definition, process_id="p"))
    assert boxes["0"][1] < boxes["1"][1] < boxes["2"][1] < boxes["3"][1] < boxes["4"][1]
    branches = [boxes[f"1_{n}"] for n in range(3)]
    assert len({y for _, y in branches}) == 1  # side by side
    assert branches[0][0] < branches[1][0] < branches[2][0]
    assert boxes["2_0"][1] == boxes["2_1"][1] and boxes["2_0"][0] < boxes["2_1"][0]
    assert boxes["3"][1] < boxes["3_0"][1]  # the loop's body inside its frame
    shown = draw(definition, process_id="p", links={"4": "/instances/child-1"})
    assert 'href="/instances/child-1"' in shown
    assert 'data-activity="p_1_2"' in shown


def test_the_diagram_shows_a_running_loop_s_round(filled: Filled) -> None:
    loop = """<process name="billing">
      <context><property name="accounts" type="json">["a", "b", "c"]</property></context>
      <foreach select="accounts"><action participant="bill"/></foreach>
    </process>"""
    filled.launch(loop, "billing-1")
    filled.answer_all()
    with filled.client() as client:
        page = client.get("/instances/billing-1").text
        assert ">round 2 of 3</text>" in page
        assert re.search(r'data-path="0_0"[^>]*data-state="waiting"', page)


# who may operate --------------------------------------------------------------------------------


def test_api_operations_need_the_bearer_token(filled: Filled) -> None:
    filled.launch(WAITING, "order-1")
    body = {"reason": "customer cancelled"}
    with filled.client(token=None) as client:
        read_only = client.post("/api/instances/order-1/terminate", json=body)
        assert read_only.status_code == 403 and "read-only" in read_only.json()["error"]
    with filled.client() as client:
        assert client.post("/api/instances/order-1/terminate", json=body).status_code == 403
        wrong = {"Authorization": "Bearer " + TOKEN[:-1] + "y"}
        assert (
            client.post("/api/instances/order-1/terminate", json=body, headers=wrong).status_code
            == 403
        )
        assert filled.control_messages() == []
        right = {"Authorization": f"Bearer {TOKEN}"}
        sent = client.post("/api/instances/order-1/terminate", json=body, headers=right)
        assert sent.status_code == 202
        set_values = {"values": {"amount": 7}}
        assert (
            client.post("/api/instances/order-1/set", json=set_values, headers=right).status_code
            == 202
        )
        bad = client.post("/api/instances/order-1/rerun", json={}, headers=right)
        assert bad.status_code == 400
        unknown = client.post("/api/instances/nobody/resume", headers=right)
        assert unknown.status_code == 404
    messages = filled.control_messages()
    assert [(m["name"], m["process_id"]) for m in messages] == [
        ("terminate", "order-1"),
        ("set", "order-1"),
    ]
    assert messages[0]["reason"] == "web console: customer cancelled"
    assert messages[1]["values"] == {"amount": 7}


def test_page_operations_need_a_session_the_csrf_token_and_the_same_origin(
    filled: Filled,
) -> None:
    filled.launch(WAITING, "order-1")
    url = "/instances/order-1/terminate"
    with filled.client() as client:
        anonymous = client.get("/instances/order-1").text
        assert "Sign in" in anonymous and 'id="op-terminate"' not in anonymous
        refused = client.post(url, data={"csrf": "x"}, headers={"Origin": HOST})
        assert refused.status_code == 403
        assert sign_in(client, TOKEN + "-wrong").status_code == 403
        foreign = client.post(
            "/login", data={"token": TOKEN}, headers={"Origin": "http://evil.test"}
        )
        assert foreign.status_code == 403
        elsewhere = client.post(
            "/login",
            data={"token": TOKEN, "next": "//evil.test/x"},
            headers={"Origin": HOST},
            follow_redirects=False,
        )
        assert elsewhere.headers["location"] == "/instances"  # never to another site
        signed = sign_in(client)
        assert signed.status_code == 303
        assert "httponly" in signed.headers["set-cookie"].lower()
        assert "samesite=strict" in signed.headers["set-cookie"].lower()
        page = client.get("/instances/order-1").text
        assert 'id="op-terminate"' in page
        csrf = csrf_of(page)
        for data, headers in (
            ({}, {"Origin": HOST}),  # no CSRF token
            ({"csrf": csrf[:-1] + ("1" if csrf.endswith("0") else "0")}, {"Origin": HOST}),
            ({"csrf": csrf}, {"Origin": "http://evil.test"}),  # another site's page
            ({"csrf": csrf}, {}),  # no Origin, no Referer
            ({"csrf": csrf}, {"Origin": "http://evil.test", "X-Forwarded-Host": "other.test"}),
        ):
            answer = client.post(url, data=data, headers=headers, follow_redirects=False)
            assert answer.status_code == 403, (data, headers)
        assert filled.control_messages() == []
        done = client.post(
            url,
            data={"csrf": csrf, "reason": "by hand"},
            headers={"Origin": HOST},
            follow_redirects=False,
        )
        assert done.status_code == 303
        assert done.headers["location"] == "/instances/order-1?sent=terminate"
        by_referer = client.post(
            "/instances/order-1/rerun",
            data={"csrf": csrf, "activity": "order-1_1"},
            headers={"Referer": f"{HOST}/instances/order-1"},
            follow_redirects=False,
        )
        assert by_referer.status_code == 303
    with filled.client() as other:  # another browser: the session cookie is not its own
        other.cookies.set("bureaucrat_session", "forged.9999999999.00")
        assert other.post(url, data={"csrf": csrf}, headers={"Origin": HOST}).status_code == 403
    messages = filled.control_messages()
    assert [m["name"] for m in messages] == ["terminate", "rerun"]
    assert messages[0]["reason"] == "web console: by hand"
    assert messages[1]["activity"] == "order-1_1"


def test_the_web_section_of_the_config(tmp_path: Path) -> None:
    path = tmp_path / "web.conf"
    path.write_text(f"[web]\nhost = 0.0.0.0\nport = 9090\ntoken = {TOKEN}\n")
    config = load_config(path, environ={})
    assert (config.web_host, config.web_port, config.web_token) == ("0.0.0.0", 9090, TOKEN)
    assert load_config(None, environ={}).web_token is None
    assert load_config(path, environ={"BUREAUCRAT_WEB_TOKEN": "x" * 20}).web_token == "x" * 20
    path.write_text("[web]\nport = 70000\n")
    with pytest.raises(ConfigError, match=r"\[web\] port"):
        load_config(path, environ={})
    path.write_text("[web]\ntoken = short\n")
    with pytest.raises(ConfigError, match="at least 16") as error:
        load_config(path, environ={})
    assert "short" not in str(error.value)  # a secret is never shown


def test_bureaucrat_web_help() -> None:
    env = {"PYTHONPATH": str(ROOT)}
    shown = subprocess.run(
        [sys.executable, "-m", "bureaucrat.web.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert shown.returncode == 0
    for word in ("--host", "--port", "-c CONFIG", "token", "read-only"):
        assert word in shown.stdout


# in a browser, against a real daemon ------------------------------------------------------------

REVIEW = """<process name="approval">
  <action participant="review"/>
  <assign property="approved">True</assign>
</process>"""
IDLE = '<process name="idle"><await event="never"/></process>'
SHOWCASE = """<process name="order fulfilment">
  <context>
    <property name="order" type="int">4711</property>
    <property name="items" type="json">["book", "lamp"]</property>
  </context>
  <action participant="check_stock"/>
  <all>
    <action participant="charge_card"/>
    <sequence>
      <action participant="reserve"/>
      <foreach select="items"><assign property="packed">context["inst:current"]</assign></foreach>
    </sequence>
  </all>
  <switch>
    <case><condition>context["express"]</condition><action participant="courier"/></case>
    <default><action participant="post"/></default>
  </switch>
  <await event="delivered"/>
</process>"""
PLAYED = ("review", "check_stock", "charge_card", "reserve")
SCREENSHOTS = ROOT / "docs"
EXPECT_MS = 15_000


class Live:
    """A daemon, the console in front of its database, and the participants the test plays."""

    def __init__(self, install: Installation, console: Any, participants: Participants) -> None:
        self.install = install
        self.console = console
        self.participants = participants
        self.url = console.url

    def launch(self, source: str, process_id: str | None = None, **fields: Any) -> str:
        with self.install.launcher() as launcher:
            pid = launcher.launch(source, fields, process_id=process_id)
        self.install.wait_for(lambda: self.install.status(pid) is not None, what=f"{pid}")
        return pid

    def answer(self, participant: str, **changes: Any) -> None:
        workitem = self.participants.take(
            participant, lambda test, what: self.install.wait_for(test, what=what)
        )
        self.participants.answer(workitem, **changes)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    require_rabbitmq()
    tmp = tmp_path_factory.mktemp("console")
    with Installation(tmp, f"sqlite:///{tmp / 'bureaucrat.db'}") as install:
        participants = Participants(install.config, PLAYED)
        install.start_daemon()
        app = create_app(replace(install.config, web_token=TOKEN))
        try:
            with ConsoleServer(app) as console:
                yield Live(install, console, participants)
        finally:
            participants.close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    executable = find_chromium()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=EXPECT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    """A page in a browser context of its own (its own cookies: signed out)."""
    context = chromium.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(EXPECT_MS)
    page = context.new_page()
    yield page
    context.close()


def test_browser_list_filter_open_and_watch_the_action_turn_done(live: Live, page: Any) -> None:
    from playwright.sync_api import expect

    pid = live.launch(REVIEW)
    other = live.launch(IDLE)
    page.goto(f"{live.url}/instances")
    expect(page.locator(f'tr[data-id="{pid}"]')).to_be_visible()
    expect(page.locator(f'tr[data-id="{other}"]')).to_be_visible()
    page.fill('input[name="name"]', "approval")
    page.click('button[type="submit"]')
    expect(page.locator(f'tr[data-id="{other}"]')).to_have_count(0)
    page.click(f'tr[data-id="{pid}"] a')
    expect(page).to_have_url(re.compile(f"/instances/{pid}$"))
    action = page.locator('svg.diagram g.activity[data-path="0"]')
    expect(action).to_have_attribute("data-state", "waiting")
    expect(action).to_have_class(re.compile(r"\bs-waiting\b"))
    expect(page.locator("#live-waiting")).to_contain_text("review")
    page.evaluate("window.notReloaded = true")
    live.answer("review", verdict="yes")
    expect(page.locator('svg.diagram g.activity[data-path="0"]')).to_have_attribute(
        "data-state", "done"
    )
    expect(page.locator("#live-summary .status")).to_have_text("completed")
    expect(page.locator("#live-context")).to_contain_text('"verdict": "yes"')
    assert page.evaluate("window.notReloaded") is True  # updated in place, not reloaded


def test_browser_terminate_with_the_token_and_refused_without(
    live: Live, page: Any, chromium: Any
) -> None:
    from playwright.sync_api import expect

    pid = live.launch(IDLE)
    page.goto(f"{live.url}/instances/{pid}")
    expect(page.locator("#op-terminate")).to_have_count(0)
    page.click("#operations a")  # "Sign in"
    page.fill('input[name="token"]', "not-the-token-at-all")
    page.click("#sign-in")
    expect(page.locator(".notice.bad")).to_have_text("Wrong token.")
    page.fill('input[name="token"]', TOKEN)
    page.click("#sign-in")
    expect(page).to_have_url(re.compile(f"/instances/{pid}$"))
    expect(page.locator("#op-resume")).to_be_disabled()  # it is running, not paused
    expect(page.locator("#op-rerun")).to_be_disabled()  # no activity chosen yet
    page.once("dialog", lambda dialog: dialog.accept())
    page.fill("form[action$='/terminate'] input[name='reason']", "testing the console")
    page.click("#op-terminate")
    expect(page.locator(".notice.ok")).to_contain_text("terminate sent")
    expect(page.locator("#live-summary .status")).to_have_text("terminated")
    expect(page.locator("#op-terminate")).to_be_disabled()
    expect(page.locator("#op-restart")).to_be_enabled()
    journal = live.install.store.journal(pid)
    assert any("web console: testing the console" in json.dumps(e.details) for e in journal)

    survivor = live.launch(IDLE)
    stranger = chromium.new_context()
    try:
        other = stranger.new_page()
        other.goto(f"{live.url}/instances/{survivor}")
        expect(other.locator("#op-terminate")).to_have_count(0)
        statuses = other.evaluate(
            """async ([pid, token]) => {
                const form = await fetch(`/instances/${encodeURIComponent(pid)}/terminate`,
                    {method: "POST", body: new URLSearchParams({csrf: "guessed"})});
                const api = await fetch(`/api/instances/${encodeURIComponent(pid)}/terminate`,
                    {method: "POST", body: "{}"});
                return [form.status, api.status];
            }""",
            [survivor, TOKEN],
        )
    finally:
        stranger.close()
    assert statuses == [403, 403]
    assert live.install.status(survivor) == "running"


def test_browser_rerun_from_the_activity_clicked_on_the_diagram(live: Live, page: Any) -> None:
    from playwright.sync_api import expect

    pid = live.launch(REVIEW)
    live.answer("review", verdict="no")
    page.goto(f"{live.url}/login?next=/instances/{pid}")
    page.fill('input[name="token"]', TOKEN)
    page.click("#sign-in")
    expect(page.locator("#live-summary .status")).to_have_text("completed")
    review = page.locator('svg.diagram g.activity[data-path="0"]')
    expect(review).to_have_attribute("data-state", "done")
    review.click()
    expect(review).to_have_class(re.compile(r"\bselected\b"))
    expect(page.locator("#op-rerun")).to_be_enabled()
    page.click("#op-rerun")
    expect(page.locator(".notice.ok")).to_contain_text("rerun sent")
    expect(page.locator('svg.diagram g.activity[data-path="0"]')).to_have_attribute(
        "data-state", "waiting"
    )
    expect(page.locator("#live-summary .status")).to_have_text("running")
    live.answer("review", verdict="yes")
    expect(page.locator("#live-summary .status")).to_have_text("completed")
    expect(page.locator("#live-context")).to_contain_text('"verdict": "yes"')
    assert [e.kind for e in live.install.store.journal(pid)].count("rerun") == 1


def test_browser_screenshot_of_an_instance_page(live: Live, page: Any, tmp_path: Path) -> None:
    """The README's picture: an instance part way through (``make screenshots`` keeps it in
    docs/; otherwise it is only taken, to show the page renders)."""
    from playwright.sync_api import expect

    pid = live.launch(SHOWCASE, "order-4711", customer="Ada Lovelace")
    live.answer("check_stock", in_stock=True)
    live.answer("reserve", reserved=["book", "lamp"])
    page.goto(f"{live.url}/login?next=/instances/{pid}")
    page.fill('input[name="token"]', TOKEN)
    page.click("#sign-in")
    expect(page.locator('g.activity[data-path="1_0"]')).to_have_attribute("data-state", "waiting")
    expect(page.locator('g.activity[data-path="1_1_1"]')).to_have_attribute("data-state", "done")
    page.click('g.activity[data-path="1_0"]')
    expect(page.locator("#selection-note")).to_contain_text(f"{pid}_1_0")
    keep = os.environ.get("BUREAUCRAT_SCREENSHOTS") == "1"
    target = SCREENSHOTS / "console-instance.png" if keep else tmp_path / "instance.png"
    target.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000
