"""`--plot FILE.png`: a bar chart of µs per hit, one group of bars per placement."""

from __future__ import annotations

from ..errors import StepperError


def plot(report: dict, path: str) -> None:
    """Write the chart; matplotlib comes from the optional `bench` extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise StepperError("--plot needs matplotlib: pip install -e .[bench]") from None
    from .report import KEYS

    places = list(report["placements"])
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.8 / max(len(places), 1)
    for i, place in enumerate(places):
        values = [report["placements"][place][k] for k in KEYS]
        xs = [j + i * width for j in range(len(KEYS))]
        ax.bar(xs, [v if v and v > 0 else float("nan") for v in values], width, label=place)
        for x, v in zip(xs, values):
            if v is None:
                ax.text(x, 0.02, "n/a", transform=ax.get_xaxis_transform(), ha="center",
                        va="bottom", fontsize=7, rotation=90)
    ax.set_xticks([j + width * (len(places) - 1) / 2 for j in range(len(KEYS))], KEYS,
                  rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("µs per breakpoint hit (log)")
    ax.set_title(f"stepper bench: {report['hits']} hits, median of {report['repeat']}, "
                 f"{report['machine']['date']}")
    ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise StepperError(f"cannot write {path}: {e.strerror}") from None
    finally:
        plt.close(fig)
