"""The web console under /ui: server-rendered pages, a little plain JavaScript, SVG charts."""
