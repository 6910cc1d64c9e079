"""The head every bench/*.py report starts with, and where it is written:
bench/results/<date>-<name>.md, or $OUT."""
import datetime, os, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def head(title, command, commit_note, shares, setup):
    """'# title, time' then bullets: the command, the commit (with
    `commit_note` after it), the machine and who shares it, the setup."""
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    cpu = next((l.split(":")[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return [
        f"# {title}, {datetime.datetime.utcnow():%Y-%m-%dT%H:%MZ}",
        "",
        f"- command: `{command.strip()}`",
        f"- commit: {commit}{commit_note}",
        f"- machine: {os.cpu_count()} cores, {cpu}; {shares}",
        f"- {setup}",
        "",
    ]


def write(name, lines):
    """Write the report (again: a long run rewrites it as it goes)."""
    out = os.environ.get("OUT") or os.path.join(ROOT, "bench", "results", f"{datetime.date.today()}-{name}.md")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {out}", file=sys.stderr)
