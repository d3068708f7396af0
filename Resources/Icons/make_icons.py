"""Draw the 128x128 extension and module icons (Resources/Icons/PedTumorSeg.png, PedTumorSeg/Resources/Icons/).

A brain outline (gray) with the four tumor subregions nested in the paper's colors: edema (teal) around the
cystic component (yellow), non-enhancing tumor (green) and enhancing rim (red). Run with a Python that has
Pillow: ``python Resources/Icons/make_icons.py``.
"""

from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[2]
TARGETS = [ROOT / "Resources" / "Icons" / "PedTumorSeg.png", ROOT / "PedTumorSeg" / "Resources" / "Icons" / "PedTumorSeg.png"]


def rgb(color):
    return tuple(int(round(255 * c)) for c in color)


def draw(size=128) -> Image.Image:
    import sys

    sys.path.insert(0, str(ROOT / "PedTumorSeg"))
    from pedtumorseg.conventions import CC, ED, ET, LABEL_COLORS, NET

    scale = 4  # draw large, then downsample for smooth edges
    s = size * scale
    img = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.ellipse((0.06 * s, 0.12 * s, 0.94 * s, 0.88 * s), fill=(205, 205, 210, 255), outline=(90, 90, 100, 255),
              width=3 * scale)
    d.line((0.5 * s, 0.14 * s, 0.5 * s, 0.86 * s), fill=(150, 150, 160, 255), width=2 * scale)
    d.ellipse((0.42 * s, 0.26 * s, 0.86 * s, 0.70 * s), fill=rgb(LABEL_COLORS[ED]) + (255,))
    d.ellipse((0.50 * s, 0.34 * s, 0.78 * s, 0.62 * s), fill=rgb(LABEL_COLORS[ET]) + (255,))
    d.ellipse((0.545 * s, 0.385 * s, 0.735 * s, 0.575 * s), fill=rgb(LABEL_COLORS[NET]) + (255,))
    d.ellipse((0.59 * s, 0.43 * s, 0.69 * s, 0.53 * s), fill=rgb(LABEL_COLORS[CC]) + (255,))
    return img.resize((size, size), Image.LANCZOS)


if __name__ == "__main__":
    icon = draw()
    for target in TARGETS:
        target.parent.mkdir(parents=True, exist_ok=True)
        icon.save(target, optimize=True)
        print(target)
