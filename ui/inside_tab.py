"""The "Inside the model" tab: tokens, the next-token distribution, a filled-in blank, attention, embeddings and
surprise, each drawn from tasks/inside.py on the real models, with a plain explanation and a one-click example."""

from __future__ import annotations

import gradio as gr

from models import catalog, lazy
from tasks.inside import MASK, InsideModel
from tasks.spec import specs
from ui.api import handler, on_load, user_of
from ui.i18n import languages, phrase, t, text_in_page_language
from ui.picker import adapter_value as chosen
from ui.picker import no_adapter, no_adapter_box

go = lazy.module("plotly.graph_objects")

DECODERS = ["SmolLM2-135M-Instruct", "GPT-2", "Qwen2.5-0.5B-Instruct"]
TOKENIZERS = ["GPT-2", "SmolLM2-135M-Instruct", "all-MiniLM-L6-v2"]  # BPE, BPE with another vocabulary, WordPiece
ENCODERS = ["all-MiniLM-L6-v2", "BERT-base"]
KEPT, CUT, BASE_COLOUR = "#f97316", "#d1d5db", "#3b82f6"  # the app's orange, grey for what top-p cuts, blue
LAYOUT = {"margin": {"l": 10, "r": 10, "t": 40, "b": 10}, "height": 360}
INTRO = (t("inside.intro"))
EXPLAIN = {
    "tokens": t("inside.explain.tokens"),
    "next": t("inside.explain.next"),
    "fill": t("inside.explain.fill"),
    "attention": t("inside.explain.attention"),
    "similarity": t("inside.explain.similarity"),
    "surprise": t("inside.explain.surprise"),
}


def adapter_choices(inside: InsideModel, owner: str, kinds: tuple[str, ...]) -> list:
    """The owner's adapters whose task has one of the adapter kinds (language-model adapters, search ones)."""
    tasks = [s.id for s in specs() if s.trainable and s.adapter_kind in kinds]
    names = [a["name"] for task in tasks for a in inside.ctx.adapters.store.list(owner, task)]
    return [no_adapter()] + list(dict.fromkeys(names))


def bars(labels: list[str], values: list[float], what: str, colours: list[str], title: str = "") -> go.Figure:
    name = phrase("inside.adapter") if title else what
    figure = go.Figure(go.Bar(x=labels, y=values, marker_color=colours, name=name,
                              hovertemplate="%{x}: %{y:.3f}<extra></extra>"))
    figure.update_layout(yaxis={"title": what}, title=title, showlegend=False, **LAYOUT)
    return figure


# ---- tokens --------------------------------------------------------------------------------------------------

def tokens_view(inside: InsideModel, text: str, model: str, compare: bool):
    """Coloured tokens of one tokenizer, or of three side by side."""
    models = TOKENIZERS if compare else [model]
    views = []
    for name in models:
        result = inside.tokenize(text, name)
        pieces = [(t["text"], f"#{t['id']}") for t in result["tokens"]]
        views.append(gr.update(value=pieces, label=phrase("inside.token_count", model=result["model"],
                                                          count=result["count"]), visible=True))
    return views + [gr.update(visible=False)] * (3 - len(views))


# ---- next token ----------------------------------------------------------------------------------------------

def next_view(inside: InsideModel, text: str, model: str, adapter: str, k: int, temperature: float, top_p: float,
              request: gr.Request = None):
    result = inside.next_token(text, model, chosen(adapter), int(k), temperature, top_p, owner=user_of(request))
    tokens = result["tokens"]
    figure = bars([repr(t["text"]) for t in tokens], [t["prob"] for t in tokens], phrase("inside.probability"),
                  [KEPT if t["kept"] else CUT for t in tokens],
                  phrase("inside.with_adapter") if result["adapter"] else "")
    if result["base"]:  # the base's bars beside the adapter's (its own top tokens)
        base = result["base"]["tokens"]
        figure.add_trace(go.Bar(x=[repr(t["text"]) for t in base], y=[t["prob"] for t in base],
                                name=phrase("inside.base"), marker_color=BASE_COLOUR))
        figure.update_layout(barmode="group", showlegend=True)
    summary = f"**{result['model']}**{' + ' + result['adapter'] if result['adapter'] else ''}: " + phrase(
        "inside.entropy", bits=f"{result['entropy']:.2f}", choices=f"{2 ** result['entropy']:.0f}",
        kept=f"{result['kept_by_top_p']:,}")
    return figure, summary, gr.update(choices=[(repr(t["text"]), t["text"]) for t in tokens], value=None)


def append_token(text: str, token: str | None) -> str:
    return text + token if token else text


def append_likeliest(inside: InsideModel, text: str, model: str, adapter: str, request: gr.Request = None) -> str:
    result = inside.next_token(text, model, chosen(adapter), 1, 0.0, 1.0, owner=user_of(request))
    return text + result["tokens"][0]["text"]


# ---- fill the blank ------------------------------------------------------------------------------------------

def fill_view(inside: InsideModel, text: str, model: str, request: gr.Request = None):
    result = inside.fill_mask(text, model, 8, owner=user_of(request))
    words = result["candidates"]
    figure = bars([c["token"] for c in words], [c["score"] for c in words], phrase("inside.score"),
                  [KEPT] * len(words))
    best = words[0]["text"] if words else ""
    return figure, f"**{result['model']}**: “{best}”\n\n*{text_in_page_language(result['note'])}*"


# ---- attention -----------------------------------------------------------------------------------------------

def attention_view(inside: InsideModel, text: str, model: str, layer: int, head: int):
    result = inside.attention(text, model, int(layer), int(head))
    labels = [f"{i}:{t}" for i, t in enumerate(result["tokens"])]
    figure = go.Figure(go.Heatmap(z=result["weights"], x=labels, y=labels, colorscale="Blues", zmin=0,
                                  hovertemplate=phrase("inside.looks_at_hover") + "<extra></extra>"))
    title = (phrase("inside.layer_mean", layer=result["layer"]) if result["head"] < 0
             else phrase("inside.layer_head", layer=result["layer"], head=result["head"]))
    figure.update_layout(yaxis={"autorange": "reversed", "title": phrase("inside.token")},
                         xaxis={"title": phrase("inside.looks_at")},
                         margin={"l": 10, "r": 10, "t": 30, "b": 10}, height=480, title=title)
    sliders = (gr.update(maximum=result["layers"] - 1), gr.update(maximum=result["heads"] - 1))
    return (figure, *sliders, gr.update(choices=labels, value=labels[-1]), result)


def attention_row(result: dict | None, token: str | None):
    """Where one token looks (its attention row), as bars."""
    if not result or not token:
        return None
    labels = [f"{i}:{t}" for i, t in enumerate(result["tokens"])]
    row = result["weights"][labels.index(token)] if token in labels else []
    return bars(labels, row, phrase("inside.attention_axis"), [KEPT] * len(row), phrase("inside.where_looks",
                                                                                         token=token))


# ---- embeddings ----------------------------------------------------------------------------------------------

def similarity_view(inside: InsideModel, texts: str, model: str, adapter: str, request: gr.Request = None):
    result = inside.similarity(texts, model, chosen(adapter), owner=user_of(request))
    short = [t if len(t) <= 40 else t[:37] + "…" for t in result["texts"]]
    heat = go.Figure(go.Heatmap(z=result["matrix"], x=short, y=short, colorscale="RdBu", zmin=-1, zmax=1,
                                hovertemplate="%{y}<br>%{x}<br>" + phrase("inside.cosine_hover") + "<extra></extra>"))
    heat.update_layout(yaxis={"autorange": "reversed"}, margin={"l": 10, "r": 10, "t": 30, "b": 10}, height=420,
                       title=phrase("inside.cosine"))
    points = go.Figure()
    maps = [(phrase("inside.after_training") if result["adapter"] else result["model"], result["points"])]
    if result["base_points"]:
        maps.insert(0, (phrase("inside.before_training"), result["base_points"]))
    for name, xy in maps:
        points.add_trace(go.Scatter(x=[p[0] for p in xy], y=[p[1] for p in xy], mode="markers+text", text=short,
                                    textposition="top center", name=name))
    points.update_layout(margin={"l": 10, "r": 10, "t": 30, "b": 10}, height=420, title=phrase("inside.sentence_map"),
                         xaxis={"zeroline": False, "showticklabels": False, "range": padded(maps, 0)},
                         yaxis={"zeroline": False, "showticklabels": False, "range": padded(maps, 1)})
    return heat, points


def padded(maps: list, axis: int) -> list[float]:
    """An axis range with room around the points for their labels."""
    values = [p[axis] for _, xy in maps for p in xy]
    low, high = min(values), max(values)
    room = (high - low or 1.0) * (0.45 if axis == 0 else 0.15)
    return [low - room, high + room]


# ---- surprise ------------------------------------------------------------------------------------------------

def surprise_view(inside: InsideModel, text: str, model: str, adapter: str, request: gr.Request = None):
    result = inside.token_loss(text, model, chosen(adapter), owner=user_of(request))
    views = [("adapter" if result["adapter"] else "base", result)] + ([("base", result["base"])]
                                                                        if result["base"] else [])
    shown = {"adapter": phrase("inside.adapter"), "base": phrase("inside.base")}
    figure = go.Figure()
    for name, view in views:
        scored = [(f"{i}:{t['text']}", -t["logprob"]) for i, t in enumerate(view["tokens"]) if t["logprob"] is not None]
        figure.add_trace(go.Bar(x=[x for x, _ in scored], y=[y for _, y in scored], name=shown[name],
                                marker_color=KEPT if name == "adapter" or len(views) == 1 else BASE_COLOUR))
    figure.update_layout(barmode="group", showlegend=len(views) > 1, yaxis={"title": phrase("inside.surprise_axis")},
                         **LAYOUT)
    coloured = [(t["text"], None if t["logprob"] is None else surprise_level(-t["logprob"]))
                for t in result["tokens"]]
    lines = [f"**{shown[name]}**: " + phrase("inside.loss_line", loss=f"{view['loss']:.3f}",
                                               perplexity=f"{view['perplexity']:.1f}") for name, view in views]
    return coloured, figure, "  \n".join(lines)


SURPRISE_COLOURS = {"expected": "green", "a_little": "yellow", "surprising": "red"}  # by level, under 1, 4, more nats


def surprise_level(nats: float) -> str:
    """The token's level as the page names it (the colour map knows every language's name)."""
    return phrase(f"inside.level.{'expected' if nats < 1.0 else 'a_little' if nats < 4.0 else 'surprising'}")


def surprise_colours() -> dict[str, str]:
    return {texts[f"inside.level.{level}"]: colour for texts in languages().values()
            for level, colour in SURPRISE_COLOURS.items()}


# ---- the tab -------------------------------------------------------------------------------------------------

def model_box(choices: list[str], value: str, label: str = "picker.model") -> gr.Dropdown:
    return gr.Dropdown(choices, value=value, label=t(label), allow_custom_value=True,
                       info=t("inside.catalog_model_hugging_face"))


def decoder_row(text: str, label: str, decoder: str) -> tuple[gr.Textbox, gr.Dropdown, gr.Dropdown]:
    """A view's text, decoder and language-model adapter boxes (the adapters are filled in on load)."""
    with gr.Row():
        return (gr.Textbox(text, label=t(label), scale=3), model_box(DECODERS, decoder),
                no_adapter_box(label=t("common.adapter"), allow_custom_value=True))


def build(inside: InsideModel) -> None:
    hidden = {"api_visibility": "undocumented"}
    decoder = inside.ctx.hub.default(catalog.DECODER)
    with gr.Tab(t("tab.inside"), id="inside"):
        gr.Markdown(INTRO)
        with gr.Tab(t("tab.inside.tokens")):
            gr.Markdown(EXPLAIN["tokens"])
            with gr.Row():
                tok_text = gr.Textbox("The quick brown fox jumps over the lazy dog.", label=t("inside.text"), scale=3)
                tok_model = model_box(TOKENIZERS, "GPT-2", "inside.tokenizer")
            with gr.Row():
                tok_run = gr.Button(t("inside.show_tokens"), variant="primary")
                tok_compare = gr.Button(t("inside.compare_three_tokenizers"))
            gr.Examples([["Hello world"], ["Tokenization splits unbelievably long words."]], [tok_text],
                        label=t("common.examples"))
            tok_views = [gr.HighlightedText(label=t("inside.tokens"), show_legend=False, combine_adjacent=False,
                                            visible=i == 0) for i in range(3)]
        with gr.Tab(t("tab.inside.next_token")):
            gr.Markdown(EXPLAIN["next"])
            nt_text, nt_model, nt_adapter = decoder_row("The capital of France is", "inside.text_so_far", decoder)
            with gr.Row():
                nt_k = gr.Slider(2, 30, value=10, step=1, label=t("inside.bars_k"))
                nt_temperature = gr.Slider(0, 2, value=1.0, step=0.05, label=t("common.temperature"))
                nt_top_p = gr.Slider(0.05, 1, value=0.9, step=0.05, label=t("common.top_p"))
            with gr.Row():
                nt_run = gr.Button(t("inside.show_next_token"), variant="primary")
                nt_likeliest = gr.Button(t("inside.add_most_likely"))
            gr.Examples([["The capital of France is"], ["Once upon a time, there was a"]], [nt_text],
                        label=t("common.examples"))
            nt_summary = gr.Markdown()
            nt_plot = gr.Plot(label=t("inside.next_token_2"))
            nt_pick = gr.Radio([], label=t("inside.click_token_add_text"))
        with gr.Tab(t("tab.inside.fill_blank")):
            gr.Markdown(EXPLAIN["fill"])
            with gr.Row():
                fm_text = gr.Textbox(f"The capital of France is {MASK}.", label=t("inside.text_with_mask"), scale=3)
                fm_model = model_box(ENCODERS[1:] + DECODERS, decoder)
            fm_run = gr.Button(t("inside.fill_blank"), variant="primary")
            gr.Examples([[f"The capital of France is {MASK}."], [f"This is an example of BERT {MASK} model."]],
                        [fm_text], label=t("common.examples"))
            fm_note = gr.Markdown()
            fm_plot = gr.Plot(label=t("inside.candidates"))
        with gr.Tab(t("tab.inside.attention")):
            gr.Markdown(EXPLAIN["attention"])
            with gr.Row():
                at_text = gr.Textbox("The animal didn't cross the street because it was too tired.",
                                     label=t("inside.text"), scale=3)
                at_model = model_box(DECODERS + ENCODERS, decoder)
            with gr.Row():
                at_layer = gr.Slider(-1, 29, value=-1, step=1, label=t("inside.layer_1_last"))
                at_head = gr.Slider(-1, 8, value=-1, step=1, label=t("inside.head_1_mean_heads"))
            at_run = gr.Button(t("inside.show_attention"), variant="primary")
            gr.Examples([["The animal didn't cross the street because it was too tired."],
                         ["The cat sat on the mat."]], [at_text], label=t("common.examples"))
            at_plot = gr.Plot(label=t("inside.attention"))
            at_token = gr.Dropdown([], label=t("inside.one_token_s_attention"))
            at_row = gr.Plot(label=t("inside.where_this_token_looks"))
            at_result = gr.State(None)
        with gr.Tab(t("tab.inside.embeddings")):
            gr.Markdown(EXPLAIN["similarity"])
            with gr.Row():
                em_texts = gr.Textbox("A man is playing a guitar.\nSomeone plays the guitar.\n"
                                      "The stock market fell today.\nShares dropped sharply this morning.",
                                      label=t("inside.sentences_one_per_line"), lines=5, scale=3)
                em_model = model_box(ENCODERS[:1], "all-MiniLM-L6-v2")
                em_adapter = no_adapter_box(label=t("inside.search_adapter"), allow_custom_value=True)
            em_run = gr.Button(t("inside.compare_sentences"), variant="primary")
            gr.Examples([["A man is playing a guitar.\nSomeone plays the guitar.\nThe stock market fell today."]],
                        [em_texts], label=t("common.examples"))
            with gr.Row():
                em_heat = gr.Plot(label=t("inside.similarity"))
                em_map = gr.Plot(label=t("inside.map"))
        with gr.Tab(t("tab.inside.surprise")):
            gr.Markdown(EXPLAIN["surprise"])
            sp_text, sp_model, sp_adapter = decoder_row("The capital of France is Paris.", "inside.text", decoder)
            sp_run = gr.Button(t("inside.measure_surprise"), variant="primary")
            gr.Examples([["The capital of France is Paris."], ["The capital of France is Berlin."]], [sp_text],
                        label=t("common.examples"))
            sp_summary = gr.Markdown()
            sp_tokens = gr.HighlightedText(label=t("inside.each_token_surprise"), combine_adjacent=False,
                                           color_map=surprise_colours())
            sp_plot = gr.Plot(label=t("inside.surprise_each_token"))
        alone, compared = gr.State(False), gr.State(True)  # made in the tab: a bar holds only tabs

    tok_run.click(handler(tokens_view, inside), [tok_text, tok_model, alone], tok_views, **hidden)
    tok_compare.click(handler(tokens_view, inside), [tok_text, tok_model, compared], tok_views, **hidden)
    next_inputs = [nt_text, nt_model, nt_adapter, nt_k, nt_temperature, nt_top_p]
    show_next = handler(next_view, inside, gpu="next_token")
    nt_outputs = [nt_plot, nt_summary, nt_pick]
    nt_run.click(show_next, next_inputs, nt_outputs, **hidden)
    gr.on([nt_temperature.release, nt_top_p.release, nt_k.release], show_next, next_inputs, nt_outputs, **hidden)
    nt_pick.input(append_token, [nt_text, nt_pick], nt_text, **hidden).then(show_next, next_inputs, nt_outputs,
                                                                            **hidden)
    nt_likeliest.click(handler(append_likeliest, inside, gpu="next_token"), [nt_text, nt_model, nt_adapter], nt_text,
                       **hidden).then(show_next, next_inputs, nt_outputs, **hidden)
    fm_run.click(handler(fill_view, inside, gpu="fill_mask"), [fm_text, fm_model], [fm_plot, fm_note], **hidden)
    show_attention = handler(attention_view, inside, gpu="attention")
    at_outputs = [at_plot, at_layer, at_head, at_token, at_result]
    at_run.click(show_attention, [at_text, at_model, at_layer, at_head], at_outputs, **hidden)
    gr.on([at_layer.release, at_head.release], show_attention, [at_text, at_model, at_layer, at_head], at_outputs,
          **hidden)
    at_token.change(attention_row, [at_result, at_token], at_row, **hidden)
    em_run.click(handler(similarity_view, inside, gpu="similarity"), [em_texts, em_model, em_adapter],
                 [em_heat, em_map], **hidden)
    sp_run.click(handler(surprise_view, inside, gpu="token_loss"), [sp_text, sp_model, sp_adapter],
                 [sp_tokens, sp_plot, sp_summary], **hidden)

    def adapters(request: gr.Request = None):
        owner = user_of(request)
        language = gr.update(choices=adapter_choices(inside, owner, ("lm",)))
        return language, language, gr.update(choices=adapter_choices(inside, owner, ("embedder",)))
    on_load(adapters, None, [nt_adapter, sp_adapter, em_adapter])
