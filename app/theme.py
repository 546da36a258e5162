"""Dark look for the instrument window: a Qt palette, one style sheet, shared colours."""
from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

# Base colours (hex strings so both QColor and style sheets can use them).
BG = "#15171c"          # window background
PANEL = "#1d2027"       # group boxes, panels
PANEL_HI = "#262a33"    # hovered / raised
BORDER = "#2f3440"
TEXT = "#dfe3ea"
TEXT_DIM = "#8a92a3"
ACCENT = "#4fd1c5"      # teal: sliders, scope trace, progress
WARN = "#f6ad55"
DANGER = "#f56565"

# The four pad corners: A (top-left), B (top-right), C (bottom-left), D (bottom-right).
CORNER_COLORS = ("#ff6b8b", "#ffc15e", "#5ec8ff", "#9d7bff")
CORNER_LETTERS = ("A", "B", "C", "D")


def corner_color(i: int) -> QColor:
    return QColor(CORNER_COLORS[i % 4])


STYLE_SHEET = f"""
QWidget {{ background: {BG}; color: {TEXT}; font-size: 10pt; }}
QMainWindow::separator {{ background: {BORDER}; width: 2px; height: 2px; }}
QGroupBox {{
    background: {PANEL}; border: 1px solid {BORDER}; border-radius: 8px;
    margin-top: 12px; padding: 4px 4px 2px 4px;
}}
QGroupBox::title {{
    subcontrol-origin: margin; left: 10px; padding: 0 4px;
    color: {TEXT_DIM}; font-weight: bold; letter-spacing: 1px;
}}
QGroupBox QWidget {{ background: {PANEL}; }}
QLabel#dim {{ color: {TEXT_DIM}; }}
QLabel#value {{ color: {ACCENT}; font-family: monospace; }}
QLabel#banner {{
    background: #3b2a12; color: {WARN}; border: 1px solid #6b4a1c;
    border-radius: 6px; padding: 6px 10px; font-weight: bold;
}}
QPushButton, QToolButton {{
    background: {PANEL_HI}; border: 1px solid {BORDER}; border-radius: 6px;
    padding: 5px 10px;
}}
QPushButton:hover, QToolButton:hover {{ border-color: {ACCENT}; }}
QPushButton:pressed {{ background: #303644; }}
QPushButton:checked {{ background: #5a1e28; border-color: {DANGER}; color: #ffd5da; }}
QPushButton#panic {{ background: #4a1c22; border-color: #7a2a33; color: #ffb3bd; font-weight: bold; }}
QPushButton#panic:hover {{ border-color: {DANGER}; }}
QComboBox, QSpinBox, QDoubleSpinBox, QLineEdit {{
    background: {BG}; border: 1px solid {BORDER}; border-radius: 5px; padding: 3px 6px;
}}
QComboBox:hover, QSpinBox:hover, QLineEdit:hover {{ border-color: {ACCENT}; }}
QComboBox QAbstractItemView {{ background: {PANEL}; selection-background-color: #2c5f5a; }}
QListWidget {{
    background: {BG}; border: 1px solid {BORDER}; border-radius: 6px; padding: 2px;
}}
QListWidget::item {{ padding: 4px; border-radius: 4px; }}
QListWidget::item:selected {{ background: #24433f; color: {TEXT}; }}
QSlider::groove:horizontal {{ height: 4px; background: {BORDER}; border-radius: 2px; }}
QSlider::sub-page:horizontal {{ background: {ACCENT}; border-radius: 2px; }}
QSlider::handle:horizontal {{
    background: {TEXT}; width: 12px; height: 12px; margin: -5px 0; border-radius: 6px;
}}
QSlider::groove:vertical {{ width: 4px; background: {BORDER}; border-radius: 2px; }}
QSlider::add-page:vertical {{ background: {ACCENT}; border-radius: 2px; }}
QSlider::handle:vertical {{
    background: {TEXT}; width: 12px; height: 12px; margin: 0 -5px; border-radius: 6px;
}}
QProgressBar {{
    background: {BG}; border: 1px solid {BORDER}; border-radius: 4px; text-align: center;
    height: 10px;
}}
QProgressBar::chunk {{ background: {ACCENT}; border-radius: 3px; }}
QStatusBar {{ background: #101216; color: {TEXT_DIM}; }}
QStatusBar QLabel {{ background: #101216; color: {TEXT_DIM}; padding: 0 8px; font-family: monospace; }}
QMenuBar {{ background: #101216; }}
QMenuBar::item:selected, QMenu::item:selected {{ background: #24433f; }}
QMenu {{ background: {PANEL}; border: 1px solid {BORDER}; }}
QScrollBar:horizontal {{ background: {BG}; height: 10px; }}
QScrollBar::handle:horizontal {{ background: {BORDER}; border-radius: 4px; min-width: 30px; }}
QScrollBar::add-line, QScrollBar::sub-line {{ width: 0; height: 0; }}
QToolTip {{ background: {PANEL}; color: {TEXT}; border: 1px solid {BORDER}; }}
"""


def apply_theme(app: QApplication) -> None:
    """Fusion style, a dark palette and the style sheet."""
    app.setStyle("Fusion")
    pal = QPalette()
    roles = {
        QPalette.Window: BG, QPalette.WindowText: TEXT, QPalette.Base: BG,
        QPalette.AlternateBase: PANEL, QPalette.Text: TEXT, QPalette.Button: PANEL_HI,
        QPalette.ButtonText: TEXT, QPalette.Highlight: "#2c5f5a",
        QPalette.HighlightedText: TEXT, QPalette.ToolTipBase: PANEL, QPalette.ToolTipText: TEXT,
        QPalette.PlaceholderText: TEXT_DIM,
    }
    for role, colour in roles.items():
        pal.setColor(role, QColor(colour))
    app.setPalette(pal)
    app.setStyleSheet(STYLE_SHEET)
    try:
        import pyqtgraph as pg

        pg.setConfigOptions(background=PANEL, foreground=TEXT_DIM, antialias=True)
    except ImportError:  # pyqtgraph is a hard dependency of the window; theme works without it
        pass
