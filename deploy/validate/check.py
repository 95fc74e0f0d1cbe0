"""Checks of the deployment manifests that a schema cannot express, run by deploy/validate.sh.

  python check.py compose docker-compose.yml COMPOSE_SCHEMA_JSON
  python check.py k8s NAME RENDERED.yaml [NAME RENDERED.yaml ...]

The schema validators (dclint and the compose specification's JSON schema; kubernetes-validate)
say whether each object is well formed. This says whether the objects fit together and fit the
services: profiles and dependencies, health checks on the right port, TRIBUTARY__* variables
that the binary's configuration accepts (each rejects unknown sections), secrets by reference,
the catalog ConfigMaps holding every file of schemas/. Prints one line per check; exits 1 with
every problem listed.
"""

import json
import os
import re
import sys
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
problems: list[str] = []


def ok(message: str) -> None:
    print(f"  ok    {message}")


def fail(message: str) -> None:
    print(f"  FAIL  {message}")
    problems.append(message)


def check(condition: bool, message: str, detail: str = "") -> None:
    if condition:
        ok(message)
    else:
        fail(f"{message}{': ' + detail if detail else ''}")


# ---- the services' configuration sections ----------------------------------------------------


def config_sections(binary: str) -> set[str] | None:
    """Top-level sections the binary's `Config` accepts (it denies unknown fields); None for
    the `tributary` command, which ignores sections it does not use."""
    if binary == "tributary":
        return None
    name = binary.removeprefix("tributary-")
    source = (ROOT / "services" / name / "src" / "config.rs").read_text()
    body = re.search(r"pub struct Config \{(.*?)\n\}", source, re.S)
    if not body:
        raise SystemExit(f"services/{name}/src/config.rs: no `pub struct Config`")
    return set(re.findall(r"^\s*pub (\w+):", body.group(1), re.M))


def check_env_sections(where: str, binary: str, names: list[str]) -> None:
    sections = config_sections(binary)
    if sections is None:
        return
    keys = [n for n in names if n.startswith("TRIBUTARY__")]
    wrong = sorted(
        n for n in keys if n.removeprefix("TRIBUTARY__").split("__")[0].lower() not in sections
    )
    check(
        not wrong,
        f"{where}: {len(keys)} TRIBUTARY__* variables are sections {binary} accepts",
        f"{', '.join(wrong)} (sections: {', '.join(sorted(sections))})",
    )


def admin_port(env: dict[str, str]) -> int | None:
    addr = env.get("TRIBUTARY__TELEMETRY__ADMIN_ADDR")
    return int(addr.rsplit(":", 1)[1]) if addr else None


def catalog_files() -> tuple[set[str], set[str]]:
    """schemas/: the files of the catalog ConfigMap and those of the jobs ConfigMap."""
    schemas = ROOT / "schemas"
    top = {"catalog.toml"} | {p.name for p in schemas.glob("*.avsc")}
    jobs = {p.name for p in (schemas / "jobs").glob("*") if p.is_file()}
    return top, jobs


# ---- docker compose --------------------------------------------------------------------------

INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value):
    """Compose's variable substitution, from this process's environment."""
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2), m.group(3)
        current = os.environ.get(name)
        if op in (":-", "-"):
            unset = current is None or (op == ":-" and current == "")
            return arg if unset else current
        if op in (":?", "?"):
            if current is None or (op == ":?" and current == ""):
                fail(f"required variable {name} is not set: {arg}")
                return ""
            return current
        return current or ""

    return INTERPOLATION.sub(sub, value)


def enabled(services: dict, profiles: set[str]) -> set[str]:
    return {n for n, s in services.items() if not s.get("profiles") or profiles & set(s["profiles"])}


def env_dict(environment) -> dict[str, str]:
    if isinstance(environment, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)
    return {k: "" if v is None else str(v) for k, v in (environment or {}).items()}


def binary_of(command) -> str | None:
    """The Tributary binary a command runs, also through `bash -c "... exec tributary-x"`."""
    words = command.split() if isinstance(command, str) else [w for c in command or [] for w in str(c).split()]
    return next((w for w in words if re.fullmatch(r"tributary(-[a-z-]+)?", w)), None)


def check_compose(path: str, schema_path: str) -> None:
    print(f"compose: {path}")
    raw = yaml.safe_load(Path(path).read_text())
    model = interpolate(raw)
    schema = json.loads(Path(schema_path).read_text())
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(model), key=lambda e: list(e.absolute_path)
    )
    check(
        not errors,
        "matches the compose specification schema (anchors merged, variables substituted)",
        "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors[:10]),
    )
    services: dict = model.get("services", {})
    infra = {"kafka", "minio", "minio-init", "postgres"}

    # One Apache Kafka version: the one the tests and `tributary up --broker kafka` run.
    pom = Path("deploy/local/kafka/pom.xml").read_text()
    pinned = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    image = (services.get("kafka") or {}).get("image", "")
    check(bool(pinned) and image == f"apache/kafka:{pinned.group(1) if pinned else '?'}",
          "kafka: the image is apache/kafka at deploy/local/kafka/pom.xml's version",
          f"{image} vs {pinned.group(1) if pinned else 'no <kafka.version> in the pom'}")

    # Profiles: compose refuses a model whose enabled services depend on disabled ones.
    for active in (set(), {"infra"}, {"all"}):
        on = enabled(services, active)
        missing = sorted(
            f"{n} -> {d}" for n in on for d in (services[n].get("depends_on") or {}) if d not in on
        )
        label = "--profile " + ",".join(sorted(active)) if active else "no profile"
        check(not missing, f"{label}: {len(on)} services, every dependency enabled", ", ".join(missing))
    check(enabled(services, {"infra"}) == infra, f"--profile infra starts exactly {sorted(infra)}",
          str(sorted(enabled(services, {"infra"}))))
    check(enabled(services, {"all"}) == set(services), "--profile all starts every service")

    published: list[str] = []
    for name, svc in services.items():
        one_shot = svc.get("restart") == "no"
        health = svc.get("healthcheck") or {}
        if not one_shot:
            check(bool(health.get("test")) and not health.get("disable"), f"{name}: has a health check")
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            fail(f"{name}: depends_on without conditions")
            deps = {}
        for dep, spec in deps.items():
            target = services.get(dep)
            if target is None:
                fail(f"{name}: depends on unknown service {dep}")
                continue
            cond = (spec or {}).get("condition", "service_started")
            if target.get("restart") == "no":
                check(cond == "service_completed_successfully",
                      f"{name}: waits for one-shot {dep} to complete", cond)
            else:
                check(cond == "service_healthy" and bool(target.get("healthcheck")),
                      f"{name}: waits for {dep} to be healthy", cond)
        for kind in ("secrets", "configs"):
            for ref in svc.get(kind) or []:
                source = ref if isinstance(ref, str) else ref.get("source")
                defined = (model.get(kind) or {}).get(source)
                if defined is None:
                    fail(f"{name}: {kind[:-1]} {source} is not defined")
                elif "file" in defined:
                    check((ROOT / defined["file"]).is_file(), f"{name}: {kind[:-1]} {source} file exists",
                          defined["file"])
        for port in svc.get("ports") or []:
            published.append(str(port).rsplit(":", 1)[0] if isinstance(port, str) else str(port))
        if "build" in svc:
            build = svc["build"]
            check((ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).is_file(),
                  f"{name}: build file {build.get('dockerfile')} exists")

        for volume in svc.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")):
                check((ROOT / source).exists(), f"{name}: bind mount {source} exists")
        binary = binary_of(svc.get("command"))
        if binary:
            env = env_dict(svc.get("environment"))
            check_env_sections(name, binary, list(env))
            mounted = {f"/run/secrets/{s if isinstance(s, str) else s.get('target', s['source'])}"
                       for s in svc.get("secrets") or []}
            files = {v for k, v in env.items() if k.startswith("TRIBUTARY__") and k.endswith("__FILE")}
            check(files <= mounted, f"{name}: every *__FILE variable names a mounted secret",
                  ", ".join(sorted(files - mounted)))
            port = admin_port(env)
            test = health.get("test") or []
            if binary != "tributary":
                check(port is not None and str(port) in test,
                      f"{name}: health check probes the admin port {port}", " ".join(map(str, test)))
    dupes = sorted({p for p in published if published.count(p) > 1})
    check(not dupes, f"{len(published)} published host ports, none twice", ", ".join(dupes))


# ---- Kubernetes ------------------------------------------------------------------------------

# Secrets the manifests reference and an operator creates (deploy/README.md, "Secrets").
EXTERNAL_SECRETS = {
    "tributary-kafka",
    "tributary-lake-credentials",
    "tributary-ingest-credentials",
    "tributary-postgres",
}
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY|API_KEY)", re.I)


def pod_spec(obj: dict) -> dict | None:
    if obj["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        return obj["spec"]["template"]["spec"]
    return None


def check_k8s(name: str, path: str) -> None:
    print(f"kubernetes: {name} ({path})")
    objs = [o for o in yaml.safe_load_all(Path(path).read_text()) if o]
    by_kind: dict[str, dict[str, dict]] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    configmaps = by_kind.get("ConfigMap", {})
    secrets = by_kind.get("Secret", {})
    deployments = by_kind.get("Deployment", {})

    def configmap(prefix: str) -> tuple[str, dict] | None:
        # Generated names end in a content hash: tributary-catalog-2bggd98hk9.
        found = [(n, o) for n, o in configmaps.items() if re.fullmatch(rf"{prefix}-[a-z0-9]{{10}}", n)]
        return found[0] if len(found) == 1 else None

    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    stray = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objs
                   if o["kind"] not in cluster_scoped and o["metadata"].get("namespace") != "tributary")
    check(not stray, "every namespaced object is in namespace tributary", ", ".join(stray))
    text = Path(path).read_text()
    unused = sorted(f"{k}/{n}" for k in ("ConfigMap", "Secret") for n in by_kind.get(k, {})
                    if len(re.findall(rf"\b{re.escape(n)}\b", text)) < 2)
    check(not unused, "every ConfigMap and Secret is referenced", ", ".join(unused))
    if name == "base":
        check(not secrets, "base defines no Secret (secrets by reference only)", ", ".join(secrets))

    # The catalog: every file of schemas/ is in a ConfigMap, the job templates under jobs/.
    top, jobs = catalog_files()
    catalog = configmap("tributary-catalog")
    catalog_jobs = configmap("tributary-catalog-jobs")
    check(catalog is not None and set(catalog[1].get("data", {})) == top,
          f"ConfigMap tributary-catalog holds the {len(top)} files of schemas/",
          "schemas/kustomization.yaml must list exactly: " + ", ".join(sorted(
              top ^ set(catalog[1].get("data", {})) if catalog else top)))
    check(catalog_jobs is not None and set(catalog_jobs[1].get("data", {})) == jobs,
          f"ConfigMap tributary-catalog-jobs holds the {len(jobs)} files of schemas/jobs/",
          "schemas/kustomization.yaml must list exactly: " + ", ".join(sorted(
              jobs ^ set(catalog_jobs[1].get("data", {})) if catalog_jobs else jobs)))
    for template in re.findall(r'template\s*=\s*"([^"]+)"', (ROOT / "schemas/catalog.toml").read_text()):
        check((ROOT / "schemas" / template).is_file(), f"catalog job template {template} exists")

    images = set()
    external = set()
    for kind in ("Deployment", "Job"):
        for oname, obj in by_kind.get(kind, {}).items():
            spec = pod_spec(obj)
            psc = spec.get("securityContext", {})
            check(psc.get("runAsNonRoot") is True and psc.get("runAsUser") == 10001,
                  f"{oname}: pod runs as non-root uid 10001")
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            for v in volumes.values():
                refs = []
                if "configMap" in v:
                    refs.append(("ConfigMap", v["configMap"]["name"], v["configMap"].get("optional")))
                if "secret" in v:
                    refs.append(("Secret", v["secret"]["secretName"], v["secret"].get("optional")))
                for src in v.get("projected", {}).get("sources", []):
                    if "configMap" in src:
                        refs.append(("ConfigMap", src["configMap"]["name"], src["configMap"].get("optional")))
                        for item in src["configMap"].get("items", []):
                            data = configmaps.get(src["configMap"]["name"], {}).get("data", {})
                            check(item["key"] in data, f"{oname}: projected key {item['key']} exists")
                for rkind, rname, optional in refs:
                    if rkind == "ConfigMap":
                        check(rname in configmaps, f"{oname}: ConfigMap {rname} exists")
                    elif rname not in secrets:
                        check(rname in EXTERNAL_SECRETS, f"{oname}: Secret {rname} is a documented one")
                        external.add(rname + (" (optional)" if optional else ""))
            for c in spec["containers"]:
                where = f"{oname}/{c['name']}"
                images.add(c["image"])
                res = c.get("resources", {})
                check(all(k in res.get(t, {}) for t in ("requests", "limits") for k in ("cpu", "memory")),
                      f"{where}: cpu and memory requests and limits")
                sc = c.get("securityContext", {})
                check(sc.get("allowPrivilegeEscalation") is False and sc.get("readOnlyRootFilesystem") is True
                      and sc.get("capabilities", {}).get("drop") == ["ALL"],
                      f"{where}: no privilege escalation, read-only root, no capabilities")
                mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
                check(all(m in volumes for m in mounts.values()), f"{where}: every mount has a volume")
                env: dict[str, str] = {}
                for e in c.get("env", []):
                    if "value" in e:
                        env[e["name"]] = e["value"]
                        if SECRET_NAME.search(e["name"]) and not e["name"].endswith("__FILE"):
                            fail(f"{where}: {e['name']} has a literal value; use a Secret")
                    else:
                        env[e["name"]] = ""
                        ref = e["valueFrom"].get("configMapKeyRef") or e["valueFrom"].get("secretKeyRef")
                        if ref and "secretKeyRef" in e["valueFrom"] and ref["name"] not in secrets:
                            check(ref["name"] in EXTERNAL_SECRETS, f"{where}: Secret {ref['name']} is a documented one")
                            external.add(ref["name"] + (" (optional)" if ref.get("optional") else ""))
                        if ref and "configMapKeyRef" in e["valueFrom"]:
                            check(ref["name"] in configmaps and ref["key"] in configmaps[ref["name"]].get("data", {}),
                                  f"{where}: {e['name']} from ConfigMap {ref['name']}")
                for src in c.get("envFrom", []):
                    ref = src.get("configMapRef") or {}
                    if ref:
                        check(ref["name"] in configmaps, f"{where}: envFrom ConfigMap {ref['name']} exists")
                        env.update(configmaps.get(ref["name"], {}).get("data", {}))
                literal = sorted(k for k in env if SECRET_NAME.search(k) and not k.endswith("__FILE")
                                 and k.startswith("TRIBUTARY__") and env[k])
                check(not literal, f"{where}: no secret value in the environment", ", ".join(literal))
                files = sorted(v for k, v in env.items() if k.endswith("__FILE"))
                unmounted = [f for f in files if not any(f.startswith(m.rstrip("/") + "/") for m in mounts)]
                check(not unmounted, f"{where}: every *__FILE variable points into a mounted volume",
                      ", ".join(unmounted))
                binary = binary_of(c.get("command")) or ""
                if binary:
                    check_env_sections(where, binary, list(env))
                if kind == "Deployment":
                    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
                    live = c.get("livenessProbe", {}).get("httpGet", {})
                    ready = c.get("readinessProbe", {}).get("httpGet", {})
                    port = admin_port(env)
                    check(live.get("path") == "/healthz" and ready.get("path") == "/readyz"
                          and ports.get(live.get("port")) == port and ports.get(ready.get("port")) == port,
                          f"{where}: liveness /healthz and readiness /readyz on the admin port {port}")
                    if binary != "tributary":
                        check("/app/schemas" in mounts or binary == "tributary-registry",
                              f"{where}: catalog mounted at /app/schemas")
            if kind == "Job":
                check("/app/schemas" in {m["mountPath"] for m in spec["containers"][0].get("volumeMounts", [])},
                      f"{oname}: catalog mounted at /app/schemas")

    check(len(images) == 1 and not any(i == "tributary" or ":" not in i for i in images),
          f"one image for every process: {', '.join(sorted(images))}")
    if external:
        print(f"  note  Secrets to create in the namespace: {', '.join(sorted(external))}")

    # train-trigger: exactly one replica, replaced not rolled, never autoscaled.
    tt = deployments.get("tributary-train-trigger")
    check(tt is not None and tt["spec"].get("replicas") == 1
          and tt["spec"].get("strategy", {}).get("type") == "Recreate",
          "tributary-train-trigger: one replica, Recreate")
    hpas = by_kind.get("HorizontalPodAutoscaler", {})
    for hname, hpa in hpas.items():
        target = hpa["spec"]["scaleTargetRef"]["name"]
        dep = deployments.get(target)
        lo, hi = hpa["spec"].get("minReplicas", 1), hpa["spec"]["maxReplicas"]
        check(dep is not None and target != "tributary-train-trigger" and lo <= hi
              and lo <= dep["spec"].get("replicas", 1) <= hi,
              f"HPA {hname}: targets {target}, {lo}..{hi} replicas around its {dep and dep['spec'].get('replicas')}")
    want_hpa = {"tributary-ingest", "tributary-transform", "tributary-feature", "tributary-archive"}
    have = {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()}
    check(have == want_hpa, "autoscaled: ingest, transform, feature, archive", str(sorted(have)))

    def matches(selector: dict) -> list[str]:
        return [n for n, d in deployments.items()
                if selector and all(d["spec"]["template"]["metadata"]["labels"].get(k) == v
                                    for k, v in selector.items())]

    for pname, pdb in by_kind.get("PodDisruptionBudget", {}).items():
        found = matches(pdb["spec"]["selector"]["matchLabels"])
        replicas = deployments[found[0]]["spec"].get("replicas", 1) if found else 0
        allows = pdb["spec"].get("maxUnavailable", 0) or replicas - pdb["spec"].get("minAvailable", 0)
        check(len(found) == 1 and allows >= 1, f"PDB {pname}: selects {found}, allows a disruption")
    for sname, svc in by_kind.get("Service", {}).items():
        found = matches(svc["spec"]["selector"])
        ports = {p.get("name") for d in found for c in deployments[d]["spec"]["template"]["spec"]["containers"]
                 for p in c.get("ports", [])}
        check(len(found) == 1 and all(p["targetPort"] in ports for p in svc["spec"]["ports"]),
              f"Service {sname}: selects {found}, target ports exist")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "compose":
        check_compose(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 4 and sys.argv[1] == "k8s" and len(sys.argv) % 2 == 0:
        for i in range(2, len(sys.argv), 2):
            check_k8s(sys.argv[i], sys.argv[i + 1])
    else:
        raise SystemExit(__doc__)
    if problems:
        print(f"\n{len(problems)} problem(s):")
        for p in problems:
            print(f"  - {p}")
        sys.exit(1)


if __name__ == "__main__":
    main()
