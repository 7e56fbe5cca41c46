"""Board profiles: flash, RAM, core, clock, a cycles-per-MAC figure for latency estimates and a
cycles-per-instruction figure for latencies from the firmware's instruction count, each with its
source. The shipped ones live in `deploy/boards/*.yaml`; a user's own is a path to a
YAML file with the same keys."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tinyvision.errors import ExportError, did_you_mean

BOARDS_DIR = Path(__file__).parent / "boards"


class Board(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    title: str = ""
    core: str
    clock_mhz: float = Field(gt=0, allow_inf_nan=False)
    flash_bytes: int = Field(gt=0)
    ram_bytes: int = Field(gt=0)
    largest_ram_block_bytes: int | None = Field(
        None, gt=0, description="the arena and the frame buffer must each fit one RAM block")
    cycles_per_mac: float = Field(gt=0, allow_inf_nan=False,
                                  description="int8 inference, for latency estimates")
    cycles_per_instruction: float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="the core's cycles per instruction of the firmware, calibrated against a "
                    "published on-board measurement: latency = instructions counted on the "
                    "emulated core x this / clock")
    sources: dict[str, str] = Field(default_factory=dict)


def board_names() -> list[str]:
    return sorted(p.stem for p in BOARDS_DIR.glob("*.yaml"))


def load_board(name_or_path: str | Path) -> Board:
    """A shipped board by name (`stm32h743`), or a YAML file of your own."""
    text = str(name_or_path)
    if not text.strip():
        raise ExportError(f"no board given; give a board name ({', '.join(board_names())}) or "
                          "the path of a YAML file.")
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise ExportError(f"board file {path} does not exist")
        if not path.is_file():
            raise ExportError(f"board file {path} is a folder, not a file; give a board name or "
                              "the path of a YAML file.")
    else:
        path = BOARDS_DIR / f"{text.lower()}.yaml"
        if not path.exists():
            raise ExportError(f"unknown board {text!r}.{did_you_mean(text.lower(), board_names())} "
                              f"Shipped boards: {', '.join(board_names())}; or give the path of "
                              "a YAML file with name, core, clock_mhz, flash_bytes, ram_bytes, "
                              "cycles_per_mac.")
    try:
        data = yaml.safe_load(path.read_text())
        return Board(**data)
    except UnicodeDecodeError:
        raise ExportError(f"board file {path} is not a YAML text file (it is not UTF-8 text); "
                          "give a YAML file with name, core, clock_mhz, flash_bytes, ram_bytes, "
                          "cycles_per_mac.") from None
    except OSError as exc:
        raise ExportError(f"cannot read board file {path}: {exc.strerror}.") from None
    except (yaml.YAMLError, TypeError) as exc:
        raise ExportError(f"board file {path} is not a YAML mapping: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ExportError(f"board file {path}: {problems}") from None
