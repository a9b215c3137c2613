#!/usr/bin/env python3
"""Renders the trigger-nats plugin manifest (release/manifest.json.in) for
Spin's plugin index from release archives: for each platform the template lists (linux and
macOS, amd64 and aarch64), the archive `trigger-nats-<version>-<os>-<arch>.tar.gz` in
--archives gives the package's url (--base-url + file name) and sha256.

  manifest.py --version 0.2.0 --archives dist/ --base-url https://…/v0.2.0 [--out F]
  manifest.py --version V --archives DIR --base-url file://DIR --only linux-amd64

--only keeps one platform (a local install). Every listed platform needs its archive
otherwise (release.sh builds this machine's; a release collects the other three from
machines of those platforms). The result is checked against the fields Spin's
plugin index documents (name, version, spinCompatibility, license, packages with os,
arch, url, sha256) before it is written.
"""
import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "manifest.json.in"
OSES = {"linux", "macos", "windows"}
ARCHES = {"amd64", "aarch64", "arm"}
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
COMPAT = re.compile(r"^[=><~^*]?=?v?\d+(\.\d+)?(\.\d+)?(-[0-9A-Za-z.-]+)?$")


def archive_name(version: str, os_: str, arch: str) -> str:
    return f"trigger-nats-{version}-{os_}-{arch}.tar.gz"


def check(manifest: dict) -> list:
    """What is wrong with `manifest` by the plugin index's documented fields."""
    problems = []
    for field in ("name", "version", "spinCompatibility", "license", "packages"):
        if field not in manifest:
            problems.append(f"missing {field}")
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", str(manifest.get("name", ""))):
        problems.append(f"name {manifest.get('name')!r} is not lowercase letters, digits and dashes")
    if not SEMVER.match(str(manifest.get("version", ""))):
        problems.append(f"version {manifest.get('version')!r} is not semver")
    if not COMPAT.match(str(manifest.get("spinCompatibility", ""))):
        problems.append(f"spinCompatibility {manifest.get('spinCompatibility')!r} is not a comparator")
    packages = manifest.get("packages") or []
    if not packages:
        problems.append("no packages")
    seen = set()
    for p in packages:
        where = f"{p.get('os')}-{p.get('arch')}"
        if p.get("os") not in OSES or p.get("arch") not in ARCHES:
            problems.append(f"package {where}: os must be one of {sorted(OSES)}, arch one of {sorted(ARCHES)}")
        if where in seen:
            problems.append(f"package {where} listed twice")
        seen.add(where)
        if not re.match(r"^(https?|file)://\S+$", str(p.get("url", ""))):
            problems.append(f"package {where}: url {p.get('url')!r}")
        if not re.fullmatch(r"[0-9a-f]{64}", str(p.get("sha256", ""))):
            problems.append(f"package {where}: sha256 {p.get('sha256')!r}")
        if set(p) != {"os", "arch", "url", "sha256"}:
            problems.append(f"package {where}: fields {sorted(p)}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--version", required=True)
    ap.add_argument("--archives", required=True, type=Path)
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--only", help="one platform, os-arch (the local install)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    manifest = json.loads(TEMPLATE.read_text())
    manifest["version"] = args.version
    packages = []
    missing = []
    for p in manifest["packages"]:
        platform = f"{p['os']}-{p['arch']}"
        if args.only and platform != args.only:
            continue
        name = archive_name(args.version, p["os"], p["arch"])
        archive = args.archives / name
        if not archive.is_file():
            missing.append(name)
            continue
        packages.append({
            "os": p["os"],
            "arch": p["arch"],
            "url": f"{args.base_url.rstrip('/')}/{name}",
            "sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
        })
    if args.only and not packages and not missing:
        print(f"the template lists no platform {args.only}", file=sys.stderr)
        return 1
    if missing:
        print(f"missing archives in {args.archives}: {', '.join(missing)}", file=sys.stderr)
        return 1
    manifest["packages"] = packages
    problems = check(manifest)
    if problems:
        print("the manifest would not pass the plugin index: " + "; ".join(problems), file=sys.stderr)
        return 1
    text = json.dumps(manifest, indent=2) + "\n"
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
