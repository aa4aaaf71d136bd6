"""Piano-roll pictures of note lists (reference vs prediction, or one piece)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def piano_roll_png(layers: Sequence[tuple[str, Sequence]], path: str | Path, *, title: str = "") -> Path:
    """Draw each (label, notes) layer as translucent bars; notes have start, end, pitch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    end = max((n.end for _, notes in layers for n in notes), default=1.0)
    pitches = [n.pitch for _, notes in layers for n in notes] or [60]
    fig, ax = plt.subplots(figsize=(max(6.0, min(40.0, end * 0.6)), 4.5), dpi=100)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for index, (label, notes) in enumerate(layers):
        color = colors[index % len(colors)]
        for n in notes:
            ax.add_patch(plt.Rectangle((n.start, n.pitch - 0.4), n.end - n.start, 0.8, color=color, alpha=0.55, lw=0))
        ax.plot([], [], color=color, lw=6, alpha=0.55, label=f"{label} ({len(notes)} notes)")
    ax.set_xlim(0, end)
    ax.set_ylim(min(pitches) - 2, max(pitches) + 2)
    ax.set_xlabel("seconds")
    ax.set_ylabel("MIDI pitch")
    ax.legend(loc="upper right", fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
