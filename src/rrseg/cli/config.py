"""Configs: print one resolved, list the packaged presets, write the config reference.

`show` prints a config as training would use it: `_base_` files merged, `--set` overrides applied, every
default filled in, name and work_dir set; the output is YAML that loads back as the same config. CFG is a
config file or the name of a packaged preset (`list` names them; in a checkout they are the files under
configs/). `reference` writes the reference of every key (type, allowed values, default, meaning), generated
from the schema: docs/CONFIG.md is its output.

examples:
  rrseg config show upernet_swin_t/ade20k_160k_rr
  rrseg config show demo --set loss.region.type=rr data.batch_size=8
  rrseg config show my_experiment.yaml > resolved.yaml
  rrseg config list
  rrseg config reference -o docs/CONFIG.md
"""

from __future__ import annotations

import argparse

from rrseg.cli._extensions import add_import_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    # -q / -v also after the action (rrseg config show demo -q), as after any command
    verbosity = argparse.ArgumentParser(add_help=False)
    verbosity.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    verbosity.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser("show", parents=[verbosity], help="print a config resolved, every default filled in",
                              description="Print CFG resolved (bases merged, overrides applied, every default filled "
                                          "in, name and work_dir set) as YAML.")
    show.add_argument("config", metavar="CFG", help="a config file, or a packaged preset's name (rrseg config list)")
    show.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override config keys")
    add_import_argument(show)
    actions.add_parser("list", parents=[verbosity], help="the packaged presets' names",
                       description="The packaged presets, one name a line: what rrseg train, eval, check-data and "
                                   "config show take in place of a file.")
    reference = actions.add_parser("reference", parents=[verbosity],
                                   help="the config reference (docs/CONFIG.md), generated from the schema",
                                   description="Every config key with its type, allowed values, default and meaning, "
                                               "as Markdown, generated from the schema.")
    reference.add_argument("-o", "--out", metavar="FILE", help="write it to FILE (default: print it)")


def run(args: argparse.Namespace) -> int:
    if args.action == "show":
        from rrseg.engine.config import config_yaml, load_config

        print(config_yaml(load_config(args.config, list(args.set))), end="")
    elif args.action == "list":
        from rrseg.engine.config import preset_names

        print("\n".join(preset_names()))
    else:
        from rrseg.engine.reference import config_reference

        text = config_reference()
        if args.out:
            from rrseg.io import atomic_write_text

            atomic_write_text(args.out, text)
            print(f"wrote {args.out}")
        else:
            print(text, end="")
    return 0
