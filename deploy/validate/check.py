"""Checks of the deployment manifests that a schema cannot express, run by deploy/validate.sh.

  python check.py compose docker-compose.yml COMPOSE_SCHEMA_JSON
  python check.py k8s NAME RENDERED.yaml [NAME RENDERED.yaml ...]

The schema validators (dclint and the compose specification's JSON schema; kubernetes-validate)
say whether each object is well formed. This says whether the objects fit together and fit the
services: profiles and dependencies, health checks on the right port, TRIBUTARY__* variables
and configuration files that the binary accepts (each rejects unknown sections), every secret
file a mounted secret and no secret mounted that the process does not read, registry clients
logging in as a registry user with the role they need, secrets by reference, the catalog
ConfigMaps holding every file of schemas/. Prints one line per check; exits 1 with every problem
listed.
"""

import json
import os
import re
import sys
import tomllib
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


# ---- configuration files and credentials ------------------------------------------------------


def command_words(command) -> list[str]:
    return command.split() if isinstance(command, str) else [w for c in command or [] for w in str(c).split()]


def config_arg(command) -> str | None:
    """The configuration file a service is given: the word after its binary (`tributary-x FILE`)."""
    words = command_words(command)
    for i, w in enumerate(words):
        if re.fullmatch(r"tributary-[a-z-]+", w):
            rest = words[i + 1:]
            return rest[0] if rest and not rest[0].startswith("-") else None
    return None


def secret_files(value, path: str = "") -> list[tuple[str, str]]:
    """The `{ file = "..." }` secrets of a parsed configuration file: (key, file)."""
    if isinstance(value, dict):
        if set(value) == {"file"} and isinstance(value["file"], str):
            return [(path, value["file"])]
        return [f for k, v in value.items() for f in secret_files(v, f"{path}.{k}" if path else k)]
    if isinstance(value, list):
        return [f for i, v in enumerate(value) for f in secret_files(v, f"{path}[{i}]")]
    return []


def bad_patterns(patterns) -> list[str]:
    """Name patterns the services refuse (tributary_core::auth::Scope): empty, `*` not last."""
    if not isinstance(patterns, list):
        return [repr(patterns)]
    return [repr(p) for p in patterns
            if not isinstance(p, str) or not p or ("*" in p and p.index("*") != len(p) - 1)]


REGISTRY_ROLES = ("read", "write", "admin")


def check_config_file(where: str, binary: str, name: str, text: str) -> dict | None:
    """A service's configuration file: TOML, sections the binary accepts, and the credentials
    without which the service does not start (registry) or refuses every request (ingest, the
    feature lookup)."""
    try:
        cfg = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        fail(f"{where}: {name} is not valid TOML: {e}")
        return None
    sections = config_sections(binary)
    if sections is not None:
        wrong = sorted(set(cfg) - sections)
        check(not wrong, f"{where}: {name}'s sections are ones {binary} accepts",
              f"{', '.join(wrong)} (sections: {', '.join(sorted(sections))})")
    if binary == "tributary-registry":
        settings = cfg.get("schema_registry", {})
        users = settings.get("users", [])
        anonymous = settings.get("anonymous", "none")
        check(anonymous in ("none", "read"), f"{where}: {name}: schema_registry.anonymous is none or read",
              repr(anonymous))
        check(bool(users) or anonymous == "read",
              f"{where}: {name} has registry users (without, and without anonymous reads, it does not start)")
        names = [u.get("name") for u in users]
        check(len(set(names)) == len(names), f"{where}: {name}: registry user names are unique", str(names))
        for u in users:
            check(u.get("role") in REGISTRY_ROLES and isinstance(u.get("password"), (str, dict))
                  and not bad_patterns(u.get("subjects", ["*"])),
                  f"{where}: {name}: registry user {u.get('name')} has a password, a role and valid subjects",
                  f"role {u.get('role')!r} (one of {', '.join(REGISTRY_ROLES)}), subjects {u.get('subjects')!r}")
    for section, scope in (("ingest", "topics"), ("feature", "views")):
        if binary != f"tributary-{section}":
            continue
        creds = cfg.get(section, {}).get("credentials", [])
        check(bool(creds), f"{where}: {name} has {section}.credentials (without, every request is refused)")
        for c in creds:
            # `topics` and `views` are aliases of one field.
            patterns = c.get("topics", c.get("views"))
            check(isinstance(c.get("secret"), (str, dict)) and patterns is not None and not bad_patterns(patterns),
                  f"{where}: {name}: credential {c.get('name')} has a secret and valid {scope}",
                  f"{scope} {patterns!r}")
    return cfg


def registry_users(cfg: dict | None, identify) -> dict[str, tuple[str, object]]:
    """The registry's users: name -> (role, the secret its password is read from, by `identify`
    in the registry's container; None when the password is not a file)."""
    out = {}
    for u in (cfg or {}).get("schema_registry", {}).get("users", []):
        password = u.get("password")
        out[u.get("name")] = (u.get("role"), identify(password["file"]) if isinstance(password, dict)
                              and "file" in password else None)
    return out


def check_registry_client(where: str, command, env: dict[str, str], users, identify) -> None:
    """A registry client logs in as a user of the registry with that user's password (the same
    secret, by `identify` in the client's container), and the user may do what the process needs:
    `tributary topics apply` sets compatibility levels (admin); a service registers the schemas
    of its topics (write, and no more)."""
    if "TRIBUTARY__REGISTRY__URL" not in env or users is None:
        return
    wanted = "admin" if "apply" in command_words(command) else "write"
    user = env.get("TRIBUTARY__REGISTRY__USERNAME")
    password = env.get("TRIBUTARY__REGISTRY__PASSWORD__FILE")
    if not user or not password:
        fail(f"{where}: a registry client needs TRIBUTARY__REGISTRY__USERNAME and __PASSWORD__FILE "
             "(the registry refuses requests without credentials)")
        return
    if user not in users:
        fail(f"{where}: registry user {user} is not one of the registry's ({', '.join(sorted(users))})")
        return
    role, theirs = users[user]
    mine = identify(password)
    check(mine is not None and mine == theirs,
          f"{where}: logs in to the registry as {user} with the password the registry checks",
          f"{password} is {mine}, the registry reads {theirs}")
    check(role == wanted, f"{where}: its registry user {user} has the role it needs, {wanted}",
          f"{user} has role {role}")


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


def compose_mounts(svc: dict, kind: str) -> dict[str, str]:
    """Where a service's `secrets` or `configs` are: path in the container -> top-level name."""
    out = {}
    for ref in svc.get(kind) or []:
        source = ref if isinstance(ref, str) else ref["source"]
        target = source if isinstance(ref, str) else ref.get("target", source)
        out[target if target.startswith("/") else ("/run/secrets/" if kind == "secrets" else "/") + target] = source
    return out


def compose_config(name: str, svc: dict, model: dict, binary: str) -> dict | None:
    """The configuration file given to a service's binary: a mounted config, checked."""
    configs = compose_mounts(svc, "configs")
    arg = config_arg(svc.get("command"))
    if not configs and arg is None:
        return None
    check(set(configs) <= {arg}, f"{name}: every mounted config is the file given to {binary}",
          ", ".join(sorted(set(configs) - {arg})))
    if arg is None:
        return None
    defined = (model.get("configs") or {}).get(configs.get(arg, ""))
    check(defined is not None, f"{name}: its configuration file {arg} is a mounted config")
    if defined is None:
        return None
    if "content" in defined:
        text = defined["content"]
    elif "file" in defined and (ROOT / defined["file"]).is_file():
        text = (ROOT / defined["file"]).read_text()
    else:
        return None  # a missing file is reported with the configs
    return check_config_file(name, binary, defined.get("file", configs[arg]).removeprefix("./"), text)


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

    # Configuration files and credentials: each secret file a process reads is mounted, each
    # secret mounted is read, registry clients log in as a user of the registry's file.
    binaries = {n: binary_of(svc.get("command")) for n, svc in services.items()}
    binaries = {n: b for n, b in binaries.items() if b}
    configs = {n: compose_config(n, services[n], model, b) for n, b in binaries.items()}
    users = None
    for n, b in binaries.items():
        if b == "tributary-registry":
            users = registry_users(configs[n], compose_mounts(services[n], "secrets").get)
    for n, b in binaries.items():
        svc = services[n]
        env = env_dict(svc.get("environment"))
        secrets = compose_mounts(svc, "secrets")
        in_config = {f for _, f in secret_files(configs[n] or {})}
        if configs[n] is not None:
            check(in_config <= set(secrets), f"{n}: every secret file of its configuration file is a mounted secret",
                  ", ".join(sorted(in_config - set(secrets))))
        read = ({v for k, v in env.items() if k.startswith("TRIBUTARY__") and k.endswith("__FILE")} | in_config
                | set(re.findall(r"/run/secrets/[\w.-]+", " ".join(command_words(svc.get("command"))))))
        check(set(secrets) <= read, f"{n}: mounts only the secrets it reads",
              ", ".join(sorted(secrets[t] for t in set(secrets) - read)))
        if b != "tributary-registry":
            check_registry_client(n, svc.get("command"), env, users, secrets.get)


# ---- Kubernetes ------------------------------------------------------------------------------

# Secrets the manifests reference and an operator creates, with their keys (deploy/README.md,
# "Kubernetes secrets").
EXTERNAL_SECRETS = {
    "tributary-kafka": {"password"},
    "tributary-lake-credentials": {"access_key_id", "secret_access_key"},
    "tributary-ingest-credentials": {"default"},
    "tributary-postgres": {"password"},
    "tributary-registry-credentials": {"admin", "services"},
    "tributary-feature-credentials": {"default"},
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

    def secret_keys(name: str) -> set[str]:
        """The keys of a Secret: generated in this render, else documented."""
        if name in secrets:
            return set(secrets[name].get("data") or {}) | set(secrets[name].get("stringData") or {})
        return EXTERNAL_SECRETS.get(name, set())

    def source(path: str, mounts: dict[str, str], volumes: dict[str, dict]) -> tuple | None:
        """What a file of a container is: (Secret or ConfigMap, its name, the key; None when the
        volume's items leave the file out), ("volume", name, path) for other volumes, None
        outside every volume."""
        for mount in sorted(mounts, key=len, reverse=True):
            prefix = mount.rstrip("/") + "/"
            if not path.startswith(prefix):
                continue
            rel, volume = path[len(prefix):], volumes.get(mounts[mount], {})
            for kind, field, name_field in (("Secret", "secret", "secretName"), ("ConfigMap", "configMap", "name")):
                if field in volume:
                    items = volume[field].get("items")
                    key = next((i["key"] for i in items if i["path"] == rel), None) if items else rel
                    return (kind, volume[field][name_field], key)
            return ("volume", mounts[mount], rel)
        return None

    def config_text(command, mounts, volumes) -> tuple[str | None, tuple | None, str | None]:
        """The configuration file given to a container's binary: (path, its source, its text)."""
        arg = config_arg(command)
        src = source(arg, mounts, volumes) if arg else None
        text = (configmaps.get(src[1], {}).get("data") or {}).get(src[2]) if src and src[0] == "ConfigMap" else None
        return arg, src, text

    # The registry's users, for its clients' checks.
    users = None
    for d in deployments.values():
        spec = pod_spec(d)
        for c in spec["containers"]:
            if binary_of(c.get("command")) != "tributary-registry":
                continue
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            _, _, text = config_text(c.get("command"), mounts, volumes)
            try:
                cfg = tomllib.loads(text) if text else None
            except tomllib.TOMLDecodeError:
                cfg = None  # reported with the registry's container
            users = registry_users(cfg, lambda f, m=mounts, v=volumes: source(f, m, v))

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
                # As the kubelet: envFrom first, env overrides it.
                env: dict[str, str] = {}
                for src in c.get("envFrom", []):
                    ref = src.get("configMapRef") or {}
                    if ref:
                        check(ref["name"] in configmaps, f"{where}: envFrom ConfigMap {ref['name']} exists")
                        env.update(configmaps.get(ref["name"], {}).get("data", {}))
                for e in c.get("env", []):
                    if "value" in e:
                        env[e["name"]] = e["value"]
                        if SECRET_NAME.search(e["name"]) and not e["name"].endswith("__FILE"):
                            fail(f"{where}: {e['name']} has a literal value; use a Secret")
                    else:
                        env[e["name"]] = ""
                        ref = e["valueFrom"].get("configMapKeyRef") or e["valueFrom"].get("secretKeyRef")
                        if ref and "secretKeyRef" in e["valueFrom"]:
                            if ref["name"] not in secrets:
                                check(ref["name"] in EXTERNAL_SECRETS,
                                      f"{where}: Secret {ref['name']} is a documented one")
                                external.add(ref["name"] + (" (optional)" if ref.get("optional") else ""))
                            check(ref["key"] in secret_keys(ref["name"]),
                                  f"{where}: {e['name']} from key {ref['key']} of Secret {ref['name']}",
                                  f"keys: {', '.join(sorted(secret_keys(ref['name'])))}")
                        if ref and "configMapKeyRef" in e["valueFrom"]:
                            check(ref["name"] in configmaps and ref["key"] in configmaps[ref["name"]].get("data", {}),
                                  f"{where}: {e['name']} from ConfigMap {ref['name']}")
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

                # The configuration file: a key of a mounted ConfigMap, checked like compose's.
                cfg = None
                arg, src, text = config_text(c.get("command"), mounts, volumes)
                if arg:
                    check(text is not None, f"{where}: its configuration file {arg} is a key of a mounted ConfigMap",
                          str(src))
                    if text is not None:
                        cfg = check_config_file(where, binary, f"{src[1]}/{src[2]}", text)
                else:
                    etc = sorted(m for m in mounts if m.startswith("/etc/tributary"))
                    check(not etc, f"{where}: mounts no configuration file it is not given", ", ".join(etc))

                # Secret files (*__FILE variables, `{ file = ... }` of the configuration file):
                # each a key of a mounted Secret; and each key mounted is one the process reads.
                read: dict[str, set] = {}
                refs = [(k, v) for k, v in env.items() if k.endswith("__FILE")]
                refs += [(f"{arg} {k}", f) for k, f in secret_files(cfg or {})]
                for label, f in refs:
                    src = source(f, mounts, volumes)
                    check(src is not None and src[0] == "Secret" and src[2] in secret_keys(src[1]),
                          f"{where}: {label} is a key of a mounted Secret",
                          f"{f} is {src}" + (f" (keys: {', '.join(sorted(secret_keys(src[1])))})"
                                             if src and src[0] == "Secret" else ""))
                    if src and src[0] == "Secret":
                        read.setdefault(src[1], set()).add(src[2])
                for vname in sorted(set(mounts.values())):
                    secret = volumes.get(vname, {}).get("secret")
                    if secret:
                        items = secret.get("items")
                        mounted = {i["key"] for i in items} if items else secret_keys(secret["secretName"])
                        unread = sorted(mounted - read.get(secret["secretName"], set()))
                        check(not unread, f"{where}: mounts only the keys of Secret {secret['secretName']} it reads",
                              f"also {', '.join(unread)} (list the keys it reads under the volume's items)")
                if binary and binary != "tributary-registry":
                    check_registry_client(where, c.get("command"), env, users,
                                          lambda f, m=mounts, v=volumes: source(f, m, v))
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
