"""Screenshot a report page (or any local page) in headless Chromium.

    python -m tools.report_screenshot out/tpu/report/index.html -o docs/report_screenshot.png

Fails (exit 1) if the page logs a console error or warning, throws, or fails to load
something, so a screenshot in the docs is also a check that the page is clean.
"""
from __future__ import annotations

import sys
from pathlib import Path

from passes.files import check_destination, check_folder_destination, check_not_read, folders_made, input_file_problem
from passes.one_line import OneLineArgumentParser, one_line, positive_int, printable
from tools.headless_chromium import BrowserError, HeadlessChromium


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m tools.report_screenshot", description=__doc__.split("\n")[0])
    parser.add_argument("page", help="an HTML file, e.g. REPORT_DIR/index.html")
    parser.add_argument("-o", "--output", default="docs/report_screenshot.png")
    parser.add_argument("--width", type=positive_int, default=1360)
    parser.add_argument("--height", type=positive_int, default=1800)
    args = parser.parse_args(argv)
    page_path = Path(args.page)
    problem = input_file_problem(page_path, "page")
    if problem:
        sys.stderr.write(f"error: {problem}\n")
        return 2
    try:
        # Before starting a browser, not after; its folder made only for the screenshot (a failure leaves none).
        output = Path(args.output)
        if output.parent.is_dir():
            check_destination(output, "--output")
        else:
            check_folder_destination(output.parent, "--output folder")
        check_not_read(output, [("page", page_path)], "--output")   # '-o index.html' drew over the page it shows
        with HeadlessChromium() as browser:
            page = browser.open(page_path.resolve().as_uri())
            if page.problems:
                sys.stderr.write("error: the page has problems:\n  " + "\n  ".join(page.problems) + "\n")
                return 1
            with folders_made(output.parent):
                page.screenshot(output, args.width, args.height)
    except (BrowserError, OSError) as error:   # DestinationError is an OSError
        sys.stderr.write(f"error: {one_line(error)}\n")
        return 2
    print(f"wrote {printable(args.output)} ({args.width}x{args.height})")
    return 0


if __name__ == "__main__":
    from passes.interrupts import run_command_line
    sys.exit(run_command_line(main))
