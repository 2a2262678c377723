// Five fixes for BokehJS 3.9.2 in the page, all about style recalculations and layouts forced while plots paint.
// Installed once per page by explorer/serve/bokehjs.py; each one's measured gain and upstream issue are listed in
// explorer/serve/tunings.py ("bokehjs").
if (!window.__explorer_bokehjs_fixed && window.Bokeh && Bokeh.require) {
  // 1. A renderer's position stylesheet is rewritten only when it changes. Every renderer of a plot (glyphs, axes,
  //    grids, the title) rewrites its <style> element at every paint (RendererView.update_position ->
  //    InlineStyleSheet.replace -> el.textContent = css), even when the text is the same: Chromium re-parses the
  //    sheet and marks the styles dirty.
  const {InlineStyleSheet, ImportedStyleSheet, GlobalImportedStyleSheet} = Bokeh.require("core/dom");
  const update = InlineStyleSheet.prototype._update;
  InlineStyleSheet.prototype._update = function (css) {
    if (this.el.textContent !== css) {
      notice(css);  // fix 2: a stylesheet that sets a `--bk-*` variable
      update.call(this, css);
    }
  };

  // 2. A plot's visuals read `--bk-*` CSS variables only once the page sets one. BokehJS lets a page restyle any
  //    visual (an axis's labels, a grid line, a legend's background) with a variable such as
  //    `--bk-axis-label-text-color`, and reads it with getComputedStyle(el).getPropertyValue() for every label it
  //    measures or draws; after any change to the page the first read forces a style recalculation: about a hundred
  //    of 10-50 ms each while a lesson's new plots are built. Until something on the page sets a `--bk-*` variable
  //    every read would answer "", so none is made. Noticed: the stylesheets and style attributes in the page when
  //    the fixes are installed; every text BokehJS writes into a stylesheet afterwards (a model's stylesheets and
  //    css_variables, Panel's CSS: fix 1's _update); every linked stylesheet BokehJS installs, once it has loaded;
  //    and a variable set on an element's style (setProperty, as BokehJS applies a model's `styles`, or a style
  //    attribute). From then on each element's variables are read once per animation frame and kept until the next,
  //    so a variable applies from the next paint on, as theming does in BokehJS.
  let themed = false;  // whether anything on the page has set a `--bk-*` CSS variable
  const notice = (css) => {
    if (!themed && /--bk-[\w-]+\s*:/.test(css))
      themed = true;
  };
  const noticeSheet = (sheet) => {
    try {
      for (const rule of sheet.cssRules)
        notice(rule.cssText);
    } catch (error) {  // a stylesheet from another origin, whose rules cannot be read: assume it may set one
      themed = true;
    }
  };

  const {VisualProperties} = Bokeh.require("core/visuals/visual");
  let answers = new WeakMap();  // element -> Map(variable -> value), for this frame
  let clearing = false;
  VisualProperties.prototype._get_css_value = function (name) {
    if (!themed)
      return "";
    const el = this.obj.el;
    let known = answers.get(el);
    if (known === undefined) {
      known = new Map();
      answers.set(el, known);
      if (!clearing) {
        clearing = true;
        requestAnimationFrame(() => { answers = new WeakMap(); clearing = false; });
      }
    }
    const variable = `${this.css_prefix}${name}`;
    let value = known.get(variable);
    if (value === undefined) {
      if (known.style === undefined)
        known.style = getComputedStyle(el);
      value = known.style.getPropertyValue(variable);
      known.set(variable, value);
    }
    return value;
  };

  const linkedSeen = new Set();  // the URLs of linked stylesheets already looked through
  const linksWatched = new WeakSet();
  const noticeLinked = (link) => {
    const look = () => {
      if (link.sheet == null || linkedSeen.has(link.href))
        return;
      linkedSeen.add(link.href);
      noticeSheet(link.sheet);
    };
    look();  // if it has loaded
    if (!linksWatched.has(link)) {
      linksWatched.add(link);
      link.addEventListener("load", look);  // once it loads, and again whenever its href changes
    }
  };
  for (const Imported of [ImportedStyleSheet, GlobalImportedStyleSheet]) {
    const install = Imported.prototype.install;
    Imported.prototype.install = function (...args) {
      noticeLinked(this.el);
      return install.apply(this, args);
    };
  }
  const setProperty = CSSStyleDeclaration.prototype.setProperty;
  CSSStyleDeclaration.prototype.setProperty = function (name, ...rest) {
    if (!themed && name.startsWith("--bk-"))
      themed = true;
    return setProperty.call(this, name, ...rest);
  };
  const setAttribute = Element.prototype.setAttribute;
  Element.prototype.setAttribute = function (name, value) {
    if (name === "style")
      notice(String(value));
    return setAttribute.call(this, name, value);
  };
  const roots = [document];  // what the page holds now: every tree, its stylesheets and style attributes
  for (let i = 0; i < roots.length && !themed; i++) {
    for (const sheet of roots[i].adoptedStyleSheets ?? [])
      noticeSheet(sheet);
    for (const el of roots[i].querySelectorAll("*")) {
      if (el.shadowRoot != null)
        roots.push(el.shadowRoot);
      if (el.hasAttribute("style"))
        notice(el.getAttribute("style"));
      if (el instanceof HTMLStyleElement)
        notice(el.textContent);
      else if (el instanceof HTMLLinkElement && el.rel === "stylesheet")
        noticeLinked(el);
    }
  }

  // 3. A plot asks for its element's font size once. PlotView.base_font_size calls getComputedStyle for every axis
  //    label and tick label it measures or draws (88 times per input change with the MNIST CNN); the first call
  //    after a change to the page forces a style recalculation. The plot's font size comes from the page's
  //    stylesheets, which do not change after the plot is shown, so the first answer is kept.
  const {PlotView} = Bokeh.require("models/plots/plot_canvas");
  const font_size = Object.getOwnPropertyDescriptor(PlotView.prototype, "base_font_size").get;
  Object.defineProperty(PlotView.prototype, "base_font_size", {
    configurable: true,
    get() {
      if (this.__explorer_font_size == null)
        this.__explorer_font_size = font_size.call(this);
      return this.__explorer_font_size;
    },
  });

  // 4. An open tooltip is moved, not reopened. TooltipView._reposition appends its element to the body again and
  //    calls showPopover() each time the hover tool re-inspects, which it does after every change to the hovered
  //    plot's data while the pointer rests on it: the element leaves and re-enters the top layer, 12-17 ms per
  //    click. When the tooltip is already open in place, both calls are skipped; its position and content are
  //    updated as before.
  const {TooltipView} = Bokeh.require("models/ui/tooltip");
  const reposition = TooltipView.prototype._reposition;
  TooltipView.prototype._reposition = function () {
    const el = this.el, host = el.parentNode;
    if (host !== (document.body.shadowRoot ?? document.body) || !el.matches(":popover-open"))
      return reposition.call(this);  // not open where _reposition puts it: its own way
    const own = Object.getOwnPropertyDescriptor(host, "append"), append = host.append;
    host.append = function (...nodes) {  // el is already in place: moving it would close the popover
      const others = nodes.filter((node) => node !== el);
      if (others.length > 0)
        append.apply(this, others);
    };
    el.showPopover = function () {};
    try {
      return reposition.call(this);
    } finally {
      if (own === undefined) delete host.append; else Object.defineProperty(host, "append", own);
      delete el.showPopover;
    }
  };

  // 5. A fixed-size Div whose text changes gets the new text, not a new element. MarkupView re-renders on any
  //    change: a new element with new stylesheets, then a layout of the whole page from Bokeh's root
  //    (LayoutDOMView.rerender -> compute_layout). When only `text` changed, the Div has a width and a height, and
  //    holds no TeX, its content is replaced in place; its size, so the page's layout, cannot change.
  const {DivView} = Bokeh.require("models/widgets/div");
  const rerender = DivView.prototype.rerender;
  const others = (model) => Object.keys(model.properties).filter((name) => name !== "text")
    .map((name) => model.properties[name].get_value());
  DivView.prototype.rerender = function () {
    const model = this.model, seen = this.__explorer_others, now = others(model);
    this.__explorer_others = now;
    const fixed = model.width != null && model.height != null && (model.sizing_mode ?? "fixed") === "fixed";
    if (seen === undefined || !fixed || model.render_as_text || !this.has_math_disabled() ||
        this.markup_el == null || now.some((value, i) => value !== seen[i]))
      return rerender.call(this);
    this.markup_el.innerHTML = model.text;  // only the text changed: same element, same size
  };
  window.__explorer_bokehjs_fixed = true;
}
