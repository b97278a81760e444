#!/usr/bin/env python3
"""Writes the seed corpora (fuzz/corpus/<target>/) from the repository's own examples.

Run from anywhere: `python3 fuzz/seeds.py`, after `scripts/fuzz` built the targets. It replaces
each corpus folder whole, keeping only the seeds that add coverage (libFuzzer's `-merge=1`; all of
them when the target is not built); the fuzzer's own finds go elsewhere (scripts/fuzz), so this
folder stays small and readable. Needs PyYAML.
"""

import base64
import hashlib
import json
import pathlib
import re
import os
import shutil
import subprocess
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
# A seed larger than this is left out: the fuzzer mutates small inputs best.
MAX_SEED = 32 * 1024


def main():
    write("playbook_compile", playbook_seeds())
    write("template_render", template_seeds())
    write("webhook_ingress", webhook_seeds())
    write("wit_value", wit_seeds())


def write(target, seeds):
    folder = CORPUS / target
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    kept = {}
    for name, data in seeds:
        if isinstance(data, str):
            data = data.encode()
        if len(data) <= MAX_SEED and data not in kept.values():
            kept[name] = data
    for name, data in sorted(kept.items()):
        (folder / name).write_bytes(data)
    minimize(target, folder)
    seeds = list(folder.iterdir())
    size = sum(seed.stat().st_size for seed in seeds)
    print(f"{target}: {len(seeds)} seeds, {size // 1024} KiB")


def minimize(target, folder):
    """Removes the seeds that add no coverage, if the target is built."""
    out = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "fuzz"
    binaries = list(out.glob(f"*/release/{target}"))
    if not binaries:
        return
    with tempfile.TemporaryDirectory() as merged:
        subprocess.run([str(binaries[0]), "-merge=1", merged, str(folder)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kept = set(os.listdir(merged))
    for seed in folder.iterdir():
        if hashlib.sha1(seed.read_bytes()).hexdigest() not in kept:
            seed.unlink()


def yaml_files():
    for pattern in ["playbooks/*.yaml", "connectors/*.yaml", "docs/senders/*.yaml",
                    "tests/ui/valid/*.yaml", "tests/ui/invalid/*.yaml"]:
        yield from sorted(ROOT.glob(pattern))


def seed_name(path):
    return str(path.relative_to(ROOT)).replace("/", "_")


def playbook_seeds():
    for path in yaml_files():
        yield seed_name(path), path.read_bytes()
    yield "hand_empty_mapping.yaml", "{}\n"
    yield "hand_schedule.yaml", (
        "name: tick\ntrigger:\n  schedule:\n    cron: '*/5 * * * * *'\n    timezone: Europe/Paris\n"
        "    catch_up: 1h\nsteps:\n  - id: a\n    uses: core/echo\n    with: { at: '{{ run.started_at }}' }\n")
    yield "hand_cr_lines.yaml", "name: x\rtrigger:\r  webhook: y\r  public: true\rsteps: []\r"
    yield "hand_quoted_newlines.yaml", (
        "name: x\ntrigger: { webhook: y, public: true }\nsteps:\n  - id: a\n    uses: core/echo\n"
        "    with: { v: \"{{ 1 +\\n\\n\\n }}\" }\n")


def event_for(path):
    """The sample event that goes with an example: playbooks/events/ or tests/senders/."""
    for candidate in [ROOT / "playbooks" / "events" / f"{path.stem}.json",
                      ROOT / "tests" / "senders" / f"{path.stem}.json"]:
        if candidate.exists():
            return json.loads(candidate.read_text())
    return {"severity": "high", "src_ip": "203.0.113.7", "iocs": ["198.51.100.1"]}


def templates(node, key=None):
    """(kind, text) of every template in a YAML tree: conditions by their key, others by braces."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from templates(v, k)
    elif isinstance(node, list):
        for item in node:
            yield from templates(item, key)
    elif isinstance(node, str):
        if key in ("if", "filter", "resolved"):
            yield "C", node
        elif "{{" in node or "{%" in node:
            inner = node.strip()
            lone = inner.startswith("{{") and inner.endswith("}}") and inner.count("{{") == 1
            yield ("E", inner[2:-2].strip()) if lone else ("T", node)


def read_by(template, event):
    """The part of `event` a template reads (its top-level keys), to keep seeds small."""
    if not isinstance(event, dict) or re.search(r"\b(trigger|output)\b(?![.\w])", template):
        return event
    keys = set(re.findall(r"\b(?:trigger|output)\.(\w+)", template))
    return {key: value for key, value in event.items() if key in keys}


def template_seeds():
    seen = set()
    for path in yaml_files():
        try:
            tree = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            continue
        event = event_for(path)
        for index, (kind, text) in enumerate(templates(tree)):
            if (kind, text) in seen:
                continue
            seen.add((kind, text))
            yield f"{seed_name(path)}_{index}_{kind}", kind.encode() + text.encode() + b"\0" + \
                json.dumps(read_by(text, event), separators=(",", ":")).encode()
    event = b'{"src_ip": "203.0.113.7", "user": "alice", "severity": "high", "tags": ["a", "b"], "n": 3}'
    hand = [
        ("T", "Token {{ secrets.token }}"),
        ("E", "secrets.token"),
        ("T", "{{ secrets.token | upper }}"),
        ("T", "{{ secrets.token ~ secrets.api_key }}"),
        ("E", "[secrets.token, trigger.user]"),
        ("T", "{{ secrets | tojson }}"),
        ("T", "{% for k in secrets %}{{ k }}{% endfor %}"),
        ("P", "{{ secrets.token }}"),
        ("P", "Bearer {{ secrets.api_key }} for {{ trigger.user }}"),
        ("P", "{{ steps.enrich.output.src_ip | private_ip }}"),
        ("E", "[0] * 100000"),
        ("T", "{{ 'x' * 300000 }}"),
        ("E", "range(100000) | join('y')"),
        ("T", "{% for i in range(10) %}{% for j in range(10) %}{{ i * j }}{% endfor %}{% endfor %}"),
        ("E", "trigger.tags | map('upper') | list"),
        ("E", "trigger.src_ip is ip_address and trigger.src_ip is not in_cidr(vars.protected)"),
        ("C", "trigger.severity in ['high', 'critical'] and trigger.n > 2"),
        ("C", "{{ trigger.user == 'alice' }}"),
        ("E", "{'a': trigger.n, 'b': [1, 2.5, none, true]}"),
        ("E", "trigger.user ~ '-' ~ run.id"),
        ("E", "not " * 150 + "true"),
        ("E", "[" * 90 + "1" + "]" * 90),
        ("T", "{% raw %}{{ not a tag }}{% endraw %}"),
        ("T", "{# comment #}{{ trigger.user | default('nobody') | title }}"),
        ("E", "trigger | dictsort | list"),
        ("E", "trigger.missing"),
        ("T", "line one\n{{ trigger.user +\n }}"),
        ("E", "1.0e308 * 10"),
        ("E", "0.1 + 0.2"),
    ]
    for index, (kind, text) in enumerate(hand):
        yield f"hand_{index}_{kind}", kind.encode() + text.encode() + b"\0" + event


# The clock and secrets of fuzz_targets/webhook_ingress.rs.
NOW = 1_767_225_600
TOKEN = "fuzz-token"


def request(trigger, headers, body):
    lines = [trigger] + [f"{name}: {value}" for name, value in headers] + [""]
    return ("\r\n".join(lines) + "\r\n").encode() + body


def auth_headers(kind):
    if kind == "bearer":
        return [("authorization", f"Bearer {TOKEN}")]
    if kind == "basic":
        credentials = base64.b64encode(b"elastic:fuzz-password").decode()
        return [("authorization", f"Basic {credentials}")]
    if kind in ("hmac-sha256", "hmac"):
        return [("x-fuzz-sign", "1")]
    if kind == "standard":
        return [("webhook-id", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"),
                ("webhook-timestamp", str(NOW)), ("x-fuzz-sign", "1")]
    return []


def webhook_seeds():
    senders = json.loads((ROOT / "tests" / "senders" / "senders.json").read_text())
    for sender in senders:
        trigger = sender["webhook"]
        if sender["auth"] == "url-token":
            trigger += f"/{TOKEN}"
        headers = [("content-type", sender["content_type"])] + auth_headers(sender["auth"])
        for fixture in [sender["fixture"], sender.get("resolved_fixture")]:
            if fixture:
                body = (ROOT / "tests" / "senders" / fixture).read_bytes()
                yield f"sender_{fixture}", request(trigger, headers, body)
    examples = {
        "contain-brute-force": (f"splunk-brute-force/{TOKEN}", "url-token"),
        "escalate-with-connectors": ("elastic-ssh-compromise", "basic"),
        "hello-webhook": ("hello", "hmac"),
        "investigate-suspicious-process": ("wazuh-alerts", "bearer"),
        "malicious-ip": ("elastic-threat-intel", "standard"),
        "phishing-url-triage": ("phishing-reports", "public"),
    }
    for name, (trigger, kind) in examples.items():
        body = (ROOT / "playbooks" / "events" / f"{name}.json").read_bytes()
        headers = [("content-type", "application/json; charset=utf-8")] + auth_headers(kind)
        yield f"example_{name}", request(trigger, headers, body)
    bearer = auth_headers("bearer")
    yield "hand_deep", request("wazuh", [("content-type", "application/json")] + bearer,
                               b"[" * 65 + b"]" * 65)
    yield "hand_deep_in_string", request("wazuh", [("content-type", "application/json")] + bearer,
                                         b'{"a": "' + b"[" * 100 + b'", "b": [[1]]}')
    yield "hand_vendor_json", request("phishing-reports",
                                      [("content-type", "application/vnd.api+json")], b'{"x": 1}')
    yield "hand_no_content_type", request("phishing-reports", [], b'{"x": 1}')
    yield "hand_basic_bad", request("elastic", [("authorization", "Basic !!!")], b"{}")
    yield "hand_stale", request("elastic-threat-intel",
                                [("webhook-id", "a"), ("webhook-timestamp", str(NOW - 301)),
                                 ("webhook-signature", "v1,AAAA v1,BBBB")], b"{}")


def wit_seeds():
    ban_input = {"type": "object", "required": ["ip"], "properties": {
        "ip": {"type": "string", "description": "An IP address or a CIDR range."},
        "duration": {"type": "string", "default": "4h", "pattern": "^[0-9]+(h|m|s)$"},
        "reason": {"type": "string"}, "base_url": {"type": "string"}}}
    ban_output = {"type": "object", "properties": {
        "ip": {"type": "string"}, "alert_ids": {"type": "array", "items": {"type": "string"}},
        "already_banned": {"type": "boolean"}}}
    check_input = {"type": "object", "required": ["indicator"], "properties": {
        "indicator": {"type": "string", "maxLength": 2048},
        "kind": {"enum": ["ip", "domain", "url", "hash"]},
        "max_age_days": {"type": "integer", "minimum": 1, "maximum": 365, "default": 30}}}
    outputs = [json.dumps({"ip": "203.0.113.7", "alert_ids": ["42"], "already_banned": False})]
    for mock in sorted((ROOT / "playbooks" / "mocks").glob("*/*.json"))[:8]:
        outputs.append(mock.read_text())
    inputs = [{"ip": "203.0.113.7"}, {"ip": "10.0.0.1"}, {"ip": "10[.]1[.]2[.]3"},
              {"ip": "[::1]:22"}, {"ip": "::ffff:10.1.2.3"}, {"ip": "192.168.0.0/8"},
              {"targets": ["198.51.100.0/24", {"nested": "fe80::1%eth0"}]}, {"ip": " 127.0.0.1 "}]
    manifests = [
        ("0.1.0", "block-ip", "1.0.0", "Ban IPs.", "ban", "Bans an IP.", ban_input, ban_output, 2,
         "crowdsec_password", "", ""),
        ("0.1.3", "enrich-ioc", "0.4.1", "Reputation.", "check", "Checks an indicator.",
         check_input, {"type": "object"}, 1, "abuseipdb_key", "Key", "{secret}"),
        ("1.0.0", "future", "9.9.9", "A newer contract.", "a|b", "multi\nline", "not json",
         "{\"type\": [\"array\", \"null\"], \"items\": {\"type\": \"array\"}}", 3, "t",
         "Authorization", "Bearer {secret}"),
        ("0.1", "short", "1", "", "x", "", {"properties": {"a|b": {"enum": [1, None, "x"]}}},
         {}, 0, "", "", ""),
    ]
    for index, fields in enumerate(manifests):
        fields = list(fields)
        fields[6] = fields[6] if isinstance(fields[6], str) else json.dumps(fields[6])
        fields[7] = fields[7] if isinstance(fields[7], str) else json.dumps(fields[7])
        fields[8] = chr(fields[8] + ord("0"))
        for variant in range(2):
            output = outputs[(index * 2 + variant) % len(outputs)]
            step_input = json.dumps(inputs[(index * 2 + variant) % len(inputs)])
            data = "\0".join(fields + [output, step_input, "api.example.com", "*.crowdsec.net"])
            yield f"hand_{index}_{variant}", data
    for index, step_input in enumerate(inputs):
        yield f"guard_{index}", "\0" * 13 + json.dumps(step_input)


if __name__ == "__main__":
    main()
