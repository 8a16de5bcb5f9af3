#!/usr/bin/env python3
"""Fails on a broken link inside a built HTML site (the mdBook in
target/book): every relative href must name a file of the site and, when
it has a fragment, an id that file defines. Links leaving the site
(http:, https:, mailto:) are not followed: the book must not need them.

    python3 tools/check_links.py target/book
"""
import html.parser
import os
import sys
import urllib.parse


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []
        self.ids = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value is None:
                continue
            if name in ("id", "name"):
                self.ids.add(value)
            if name == "href" and tag == "a":
                self.links.append(value)


def parse(path):
    page = Page()
    with open(path, encoding="utf-8") as file:
        page.feed(file.read())
    return page


def main(root):
    pages = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".html"):
                path = os.path.join(folder, name)
                pages[os.path.normpath(path)] = parse(path)
    if not pages:
        print(f"check_links: no HTML under {root}", file=sys.stderr)
        return 1
    broken = []
    for path, page in sorted(pages.items()):
        # print.html repeats every page with rewritten links; the pages
        # themselves are what readers follow.
        if os.path.basename(path) == "print.html":
            continue
        for href in page.links:
            parsed = urllib.parse.urlsplit(href)
            if parsed.scheme or href.startswith("//"):
                if parsed.scheme in ("http", "https", "mailto"):
                    continue
                broken.append((path, href, "unknown scheme"))
                continue
            target = path
            if parsed.path:
                target = os.path.normpath(
                    os.path.join(os.path.dirname(path), urllib.parse.unquote(parsed.path))
                )
                if os.path.isdir(target):
                    target = os.path.join(target, "index.html")
            if target.endswith(".html"):
                found = pages.get(target)
                if found is None:
                    broken.append((path, href, "no such page"))
                    continue
                fragment = urllib.parse.unquote(parsed.fragment)
                if fragment and fragment not in found.ids:
                    broken.append((path, href, f"no id '{fragment}'"))
            elif not os.path.exists(target):
                broken.append((path, href, "no such file"))
    for path, href, why in broken:
        print(f"{os.path.relpath(path, root)}: {href}: {why}", file=sys.stderr)
    if broken:
        print(f"check_links: {len(broken)} broken link(s)", file=sys.stderr)
        return 1
    print(f"check_links: {sum(len(p.links) for p in pages.values())} links in {len(pages)} pages, none broken")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "target/book"))
