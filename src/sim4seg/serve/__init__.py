"""Serving: a REST API (FastAPI) and a web page (Gradio) in front of one loaded ``Predictor``.

``app.create_app`` builds the ASGI app; ``engine`` decodes uploads and turns predictions into JSON;
``limits`` holds the bounded queue, the body-size limit and the bearer-token check; ``rle`` the COCO
run-length encoding of masks; ``page`` the Gradio page; ``commands`` the ``sim4seg serve`` command.
``serve`` is an application layer: it imports ``infer``, ``eval`` and ``data``; nothing imports it.
"""
