"""Matplotlib for the renderers: the Agg backend (no display) and one way to finish a
figure, laid out, written atomically (or returned as PNG bytes for the page) and closed."""

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (also the renderers' pyplot)

from badhash_tf import io_utils  # noqa: E402


def save_png(fig, path, dpi=100):
    """Lays out `fig`, writes it to `path` atomically as PNG and closes it."""
    io_utils.write_bytes(path, png_bytes(fig, dpi))


def png_bytes(fig, dpi=100):
    """Lays out `fig` -> its PNG bytes; the figure is closed."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()
