#!/usr/bin/env python3
"""Offline consistency checks of the deployment files (docker/, deploy/k8s/).

  check_deploy.py BIN_DIR [--kubernetes-validate PATH] [--root DIR]

- the server starts with the settings the compose file and the ConfigMap give it (clap rejects
  a bad value such as `2 parsecs` at start);
- every SIDREC_* environment variable the images, the compose file, the manifests and
  docker/train.sh set or read exists in `sidrec-server --help` or a `sidrec-trainer` --help
  (the server's own settings in the server's), and every flag they pass to a binary exists in
  that binary's (sub)command --help;
- the compose file hangs together: depends_on, volumes and mounted files exist, nginx and
  Prometheus point at the replica service and port, the reload channel is the replicas' one;
- the Kubernetes manifests hang together (selectors, ConfigMap, PVC, Redis service, reload
  channel) and, given --kubernetes-validate, pass its strict schema validation.

Needs PyYAML. Prints one line per failed check and a count; exits 1 on any failure.
"""

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent  # --root replaces it (a copy to check)
ENV_RE = re.compile(r"\bSIDREC_[A-Z0-9_]+\b")
FAILURES = []
PASSED = [0]


def check(ok, what):
    if ok:
        PASSED[0] += 1
    else:
        FAILURES.append(what)


def help_text(binary, *args):
    out = subprocess.run([str(binary), *args, "--help"], capture_output=True, text=True, check=True)
    return out.stdout


def subcommands(text):
    """Names listed under `Commands:` in a clap help text."""
    names, inside = [], False
    for line in text.splitlines():
        if line.startswith("Commands:"):
            inside = True
            continue
        if inside:
            m = re.match(r"^  (\S+)", line)
            if not m:
                break
            if m.group(1) != "help":
                names.append(m.group(1))
    return names


def trainer_helps(trainer, path=()):
    """{subcommand path: help text} of every sidrec-trainer (sub)command."""
    text = help_text(trainer, *path)
    helps = {path: text}
    for sub in subcommands(text):
        helps.update(trainer_helps(trainer, path + (sub,)))
    return helps


def flags_of(text):
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text))


def envs_of(text):
    return set(re.findall(r"\[env: (SIDREC_[A-Z0-9_]+)", text))


def check_server_starts(server_bin, env, where):
    """The server accepts the values `env` gives (clap rejects a bad one at start, exit 2): it
    must still be running after a moment, on a free loopback port, an empty model directory and
    an unreachable Redis (it starts while Redis is down)."""
    import os
    import tempfile
    import time

    with tempfile.TemporaryDirectory() as models:
        run_env = {k: v for k, v in os.environ.items() if not k.startswith("SIDREC_")}
        run_env.update({k: str(v) for k, v in env.items() if k.startswith("SIDREC_")})
        run_env.update({"SIDREC_HOST": "127.0.0.1", "SIDREC_PORT": "0",
                        "SIDREC_MODEL_DIR": models})
        if "SIDREC_REDIS_URL" in run_env:
            run_env["SIDREC_REDIS_URL"] = "redis://127.0.0.1:1/"
        p = subprocess.Popen([str(server_bin)], env=run_env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(2)
            code = p.poll()
            err = p.stderr.read() if code is not None else ""
            check(code is None, f"{where}: sidrec-server exits ({code}) with these settings: "
                  + err.strip()[-300:])
        finally:
            if p.poll() is None:
                p.terminate()
                p.wait(10)


def check_command(words, where, server_help, trainer):
    """A command line that runs a binary: its flags must be in that (sub)command's --help."""
    if not words:
        return
    binary = Path(words[0]).name
    if binary == "sidrec-server":
        helps, rest = server_help, words[1:]
        flags = flags_of(helps)
    elif binary == "sidrec-trainer":
        path, rest = (), words[1:]
        while rest and not rest[0].startswith("-") and path + (rest[0],) in trainer:
            path += (rest[0],)
            rest = rest[1:]
        check(path != () or not rest, f"{where}: `{' '.join(words)}` names no trainer subcommand")
        flags = flags_of(trainer[path])
    else:
        return
    for w in rest:
        if w.startswith("--"):
            flag = w.split("=", 1)[0]
            check(flag in flags, f"{where}: {binary} {flag} is not in its --help")


def shell_commands(path):
    """Logical lines of a shell script (continuations joined), split into words."""
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            yield shlex.split(line, comments=True)
        except ValueError:
            continue


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin_dir", type=Path)
    ap.add_argument("--kubernetes-validate")
    ap.add_argument("--root", type=Path, help="checkout whose docker/ and deploy/ to check")
    args = ap.parse_args()
    global ROOT
    if args.root:
        ROOT = args.root.resolve()

    server_bin, trainer_bin = args.bin_dir / "sidrec-server", args.bin_dir / "sidrec-trainer"
    for b in (server_bin, trainer_bin):
        if not b.is_file():
            sys.exit(f"check_deploy: {b} not found (build the workspace first)")
    server_help = help_text(server_bin)
    trainer = trainer_helps(trainer_bin)
    server_envs = envs_of(server_help)
    all_envs = server_envs.union(*(envs_of(t) for t in trainer.values()))

    docker, k8s = ROOT / "docker", ROOT / "deploy" / "k8s"
    files = [docker / "Dockerfile", docker / "Dockerfile.cuda", docker / "compose.yaml",
             docker / "train.sh", *sorted(k8s.glob("*.yaml"))]
    for f in files:
        check(f.is_file(), f"{f.relative_to(ROOT)} is missing")
    files = [f for f in files if f.is_file()]

    # 1. Every SIDREC_* variable anywhere exists in some binary's --help.
    for f in files:
        for name in sorted(set(ENV_RE.findall(f.read_text()))):
            check(name in all_envs, f"{f.relative_to(ROOT)}: {name} is in no binary's --help")

    # 2. Flags on command lines: docker/train.sh runs the trainer as "$TRAINER".
    train = docker / "train.sh"
    for words in shell_commands(train):
        if words and words[0] in ("$TRAINER", "${TRAINER}"):
            words = ["sidrec-trainer", *words[1:]]
        check_command(words, "docker/train.sh", server_help, trainer)
    check(any(w[:1] == ["$TRAINER"] for w in shell_commands(train)),
          "docker/train.sh runs no trainer command")

    # 3. The compose file.
    compose = yaml.safe_load((docker / "compose.yaml").read_text())
    services = compose.get("services", {})
    volumes = set((compose.get("volumes") or {}).keys())
    server_svc = services.get("server", {})
    check(bool(server_svc), "compose: no `server` service")
    server_env = server_svc.get("environment", {})
    for name in server_env:
        if name.startswith("SIDREC_"):
            check(name in server_envs, f"compose server: {name} is not in sidrec-server --help")
    check_server_starts(server_bin, server_env, "compose server")
    check((server_svc.get("deploy") or {}).get("replicas", 1) >= 2,
          "compose: fewer than two server replicas")
    for name, svc in services.items():
        for dep in svc.get("depends_on") or []:
            check(dep in services, f"compose {name}: depends_on unknown service {dep}")
        for mount in svc.get("volumes") or []:
            src = mount.split(":", 1)[0]
            if src.startswith("."):
                check((docker / src).exists(), f"compose {name}: mounted {src} does not exist")
            else:
                check(src in volumes, f"compose {name}: volume {src} is not declared")
        cmd = svc.get("entrypoint") or []
        if isinstance(cmd, list) and svc.get("image", "").startswith("sidrec"):
            check_command(cmd + (svc.get("command") or []), f"compose {name}", server_help, trainer)
    port = str(server_env.get("SIDREC_PORT", "8080"))
    nginx = (docker / "nginx.conf").read_text()
    check(f"server server:{port} " in nginx, "nginx.conf: upstream is not server:" + port)
    prom = yaml.safe_load((docker / "prometheus.yml").read_text())
    sd = [c for job in prom["scrape_configs"] for c in job.get("dns_sd_configs", [])]
    check(any("server" in c["names"] and str(c["port"]) == port for c in sd),
          "prometheus.yml: does not discover the server replicas")
    channel = server_env.get("SIDREC_RELOAD_CHANNEL", "sidrec:reload")
    reload_cmd = (services.get("reload") or {}).get("command") or []
    check(channel in reload_cmd and "PUBLISH" in reload_cmd,
          f"compose reload: does not PUBLISH on {channel}")
    trainer_svc = services.get("trainer") or {}
    check(trainer_svc.get("entrypoint") == ["sidrec-train"], "compose trainer: not sidrec-train")
    models = [m for m in server_svc.get("volumes", []) if m.endswith(":/models:ro")]
    check(bool(models) and any(m.startswith(models[0].split(":")[0] + ":/models")
                               for m in trainer_svc.get("volumes", [])),
          "compose: trainer and replicas do not share the model volume")
    dash = json.loads((docker / "grafana" / "dashboards" / "sidrec.json").read_text())
    check(len(dash.get("panels", [])) >= 7, "grafana dashboard: fewer than 7 panels")

    # 4. The Kubernetes manifests.
    docs = []
    for f in sorted(k8s.glob("*.yaml")):
        if f.name == "kustomization.yaml":
            kust = yaml.safe_load(f.read_text())
            for r in kust["resources"]:
                check((k8s / r).is_file(), f"kustomization: {r} does not exist")
            continue
        docs += [(f, d) for d in yaml.safe_load_all(f.read_text()) if d]
    by_kind = {}
    for f, d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    cms = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
    pvcs = {d["metadata"]["name"] for d in by_kind.get("PersistentVolumeClaim", [])}
    svcs = {d["metadata"]["name"]: d for d in by_kind.get("Service", [])}
    workloads = by_kind.get("Deployment", []) + by_kind.get("StatefulSet", []) + [
        {**j, "spec": {**j["spec"], "selector": None}} for j in by_kind.get("Job", [])]
    for w in workloads:
        pod = w["spec"]["template"]["spec"]
        labels = w["spec"]["template"]["metadata"].get("labels", {})
        sel = (w["spec"].get("selector") or {}).get("matchLabels", {})
        check(all(labels.get(k) == v for k, v in sel.items()),
              f"{w['metadata']['name']}: selector does not match the pod labels")
        for vol in pod.get("volumes", []):
            claim = (vol.get("persistentVolumeClaim") or {}).get("claimName")
            check(claim is None or claim in pvcs, f"{w['metadata']['name']}: no PVC {claim}")
        for c in pod.get("initContainers", []) + pod.get("containers", []):
            where = f"{w['metadata']['name']}/{c['name']}"
            if c["image"].startswith("sidrec"):
                check_command((c.get("command") or []) + (c.get("args") or []), where,
                              server_help, trainer)
            for ref in c.get("envFrom", []):
                name = ref.get("configMapRef", {}).get("name")
                check(name in cms, f"{where}: no ConfigMap {name}")
                if name in cms and c["image"].startswith("sidrec") and w["kind"] == "Deployment":
                    for key in cms[name]["data"]:
                        check(not key.startswith("SIDREC_") or key in server_envs,
                              f"ConfigMap {name}: {key} is not in sidrec-server --help")
    deps = by_kind.get("Deployment", [])
    check(len(deps) == 1, "k8s: expected one Deployment (the replicas)")
    if deps:
        pod = deps[0]["spec"]["template"]["spec"]
        c = pod["containers"][0]
        check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness probe is not /readyz")
        check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness probe is not /healthz")
        labels = deps[0]["spec"]["template"]["metadata"]["labels"]
        check(any(all(labels.get(k) == v for k, v in s["spec"]["selector"].items())
                  for s in svcs.values()), "no Service selects the replicas")
        # Grace period covers the preStop pause plus the longest request (the drain).
        cfg = cms.get("sidrec-server", {}).get("data", {})
        timeout = int(re.match(r"(\d+)s$", cfg.get("SIDREC_REQUEST_TIMEOUT", "10s")).group(1))
        pause = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
        check(pod.get("terminationGracePeriodSeconds", 30) >= pause + timeout + 5,
              "terminationGracePeriodSeconds does not cover preStop + request timeout")
        check_server_starts(server_bin, cfg, "ConfigMap sidrec-server")
        url = cfg.get("SIDREC_REDIS_URL", "")
        host = re.match(r"redis://(?:[^@]*@)?([^:/]+)", url)
        check(host is not None and host.group(1) in svcs, f"SIDREC_REDIS_URL {url}: no Service")
        channel = cfg.get("SIDREC_RELOAD_CHANNEL", "sidrec:reload")
        for j in by_kind.get("Job", []):
            cmds = [x for c in j["spec"]["template"]["spec"]["containers"] for x in c["command"]]
            check("PUBLISH" in cmds and channel in cmds, f"Job: does not PUBLISH on {channel}")
    check(bool(by_kind.get("HorizontalPodAutoscaler")), "k8s: no HorizontalPodAutoscaler")
    check(bool(by_kind.get("Job")), "k8s: no trainer Job")

    if args.kubernetes_validate:
        manifests = [str(f) for f in sorted(k8s.glob("*.yaml")) if f.name != "kustomization.yaml"]
        r = subprocess.run([args.kubernetes_validate, "--strict", "--quiet", *manifests],
                           capture_output=True, text=True)
        check(r.returncode == 0, "kubernetes-validate --strict: " + (r.stdout + r.stderr).strip())

    for f in FAILURES:
        print(f"check_deploy: FAILED {f}")
    print(f"check_deploy: {PASSED[0]} checks passed, {len(FAILURES)} failed")
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
