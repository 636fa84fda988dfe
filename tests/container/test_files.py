"""The Dockerfile, compose.yaml and .dockerignore read without a container: quick checks that they stay in step
with the code (every EASEL_* variable a real setting) and with what docs/container.md promises."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
VARIABLE = re.compile(r"\bEASEL_[A-Z][A-Z_]*[A-Z]\b")


def stages() -> dict[str, str]:
    """The Dockerfile's stages, name -> their lines, in order."""
    found: dict[str, str] = {}
    name = None
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if match := re.match(r"FROM \S+ AS (\S+)$", line):
            name = match.group(1)
            found[name] = ""
        elif name is not None:
            found[name] += line + "\n"
    return found


def test_every_easel_variable_the_image_compose_and_docs_set_is_a_real_setting():
    # the server's settings, and scripts/bootstrap.sh's own (where torch comes from)
    known = set(VARIABLE.findall((REPO / "docs/reference/options.md").read_text()))
    known |= set(VARIABLE.findall((REPO / "scripts/bootstrap.sh").read_text()))
    for file in ("Dockerfile", "compose.yaml", "docs/container.md", "scripts/container_health.py"):
        used = set(VARIABLE.findall((REPO / file).read_text()))
        assert used and used <= known, f"{file}: {sorted(used - known)}"


def test_the_dockerfile_has_a_cuda_and_a_default_cpu_target_alike_where_it_matters():
    found = stages()
    assert list(found) == ["cuda", "cpu"]  # the last stage is what a plain `docker build` makes
    for name, body in found.items():
        for line in (
            "USER easel",
            'VOLUME ["/data"]',
            "EXPOSE 8000",
            'ENTRYPOINT ["easel"]',
            'HEALTHCHECK --interval=10s --timeout=5s --start-period=300s --retries=3 CMD ["python", '
            '"/opt/easel/scripts/container_health.py"]',
        ):
            assert line + "\n" in body, (name, line)
        assert "EASEL_HOME=/data" in body and "EASEL_HOST=0.0.0.0" in body
        assert "container_install.sh dependencies" in body and "container_install.sh project" in body


def test_compose_serves_easel_on_its_volume_and_prometheus_scrapes_it():
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    easel = compose["services"]["easel"]
    assert easel["build"] == {"context": ".", "target": "cpu"}
    assert easel["ports"] == ["8000:8000"] and easel["volumes"] == ["easel-data:/data"]
    # docker's SIGKILL must come after the drain the server is allowed
    grace = int(easel["stop_grace_period"].removesuffix("s"))
    assert grace > float(easel["environment"]["EASEL_SHUTDOWN_TIMEOUT"])
    scrape = yaml.safe_load(compose["configs"]["prometheus"]["content"])["scrape_configs"]
    assert scrape == [
        {"job_name": "easel", "metrics_path": "/metrics", "static_configs": [{"targets": ["easel:8000"]}]}
    ]
    assert set(compose["volumes"]) == {"easel-data", "prometheus-data"}
    assert "deploy:" in (REPO / "compose.yaml").read_text()  # the commented GPU variant


def test_the_build_context_leaves_out_tests_docs_and_the_venv_but_keeps_easel_mini():
    ignored = {line for line in (REPO / ".dockerignore").read_text().splitlines() if line and line[0] != "#"}
    assert {".git", ".venv", "tests", "docs"} <= ignored
    assert not any(pattern.startswith(("weights", "scripts", "server", "pipelines", "cli")) for pattern in ignored)
