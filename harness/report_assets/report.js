/* compo-harness report: plain JavaScript, no library, no network. Data come from data/*.js, which
   set window.HARNESS_REPORT (leaderboard, comparisons, benchmarks) and, loaded on demand,
   window.HARNESS_ITEMS[benchmark] (the item browser's items). Views are chosen by the URL's hash:
   #leaderboard, #comparisons, #figures, #items/<benchmark>, #items/<benchmark>/cmp/<row>/<a|b>. */
(function () {
  "use strict";
  var R = window.HARNESS_REPORT;
  var PAGE_SIZES = [10, 25, 50, 100];
  var RELATIONS = [["any", "any"], ["ab", "A right, B wrong"], ["ba", "A wrong, B right"],
                   ["both", "both right"], ["neither", "both wrong"]];
  var itemState = {};  // benchmark -> the item browser's state (filters, page, runs shown)

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) return;
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k.slice(0, 2) === "on") node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    });
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
  function fmt(v, digits) { return v === null || v === undefined ? "" : Number(v).toFixed(digits === undefined ? 2 : digits); }
  function fmtP(p) { if (p === null || p === undefined) return ""; return p < 0.001 ? p.toExponential(1) : p.toFixed(3); }
  function signed(v) { return v === null || v === undefined ? "" : (v > 0 ? "+" : "") + v.toFixed(2); }
  function clamp(v, lo, hi) { return Math.max(lo, Math.min(hi, v)); }

  /* an interval drawn on a 0..100 scale (or -100..100 centred on 0 for differences) */
  function intervalBar(value, low, high, centred) {
    if (value === null || value === undefined) return null;
    var span = centred || 100;  // a centred bar spans -centred..+centred
    function x(v) { return centred ? clamp(50 + 50 * v / span, 0, 100) : clamp(v, 0, 100); }
    var bar = el("span", {"class": "ci", title: "95% interval " + fmt(low) + " to " + fmt(high) +
      (centred ? " (scale \u00b1" + fmt(span, 0) + " points)" : "")});
    if (centred) bar.appendChild(el("span", {"class": "ci-zero"}));
    if (low !== null && high !== null && low !== undefined && high !== undefined) {
      bar.appendChild(el("span", {"class": "ci-range", style: "left:" + x(low) + "%;width:" + Math.max(0.5, x(high) - x(low)) + "%"}));
    }
    bar.appendChild(el("span", {"class": "ci-dot", style: "left:" + x(value) + "%"}));
    return bar;
  }

  /* a table whose columns sort on click; columns: {key, label, value(row), cell(row), num} */
  function sortableTable(columns, rows, initial) {
    var sort = {key: initial ? initial.key : null, dir: initial ? initial.dir : 1};
    var head = el("tr"), body = el("tbody"), table = el("table", {"class": "data"}, [el("thead", {}, [head]), body]);
    function value(col, row) { return col.value ? col.value(row) : row[col.key]; }
    function render() {
      clear(head); clear(body);
      columns.forEach(function (col) {
        var cls = sort.key === col.key ? (sort.dir > 0 ? "sorted-up" : "sorted-down") : null;
        head.appendChild(el("th", {"class": cls, title: "sort by " + col.label, onclick: function () {
          sort.dir = sort.key === col.key ? -sort.dir : 1; sort.key = col.key; render();
        }}, [col.label]));
      });
      var sorted = rows.slice();
      if (sort.key) {
        var col = columns.filter(function (c) { return c.key === sort.key; })[0];
        sorted.sort(function (a, b) {
          var x = value(col, a), y = value(col, b);
          if (x === y) return 0;
          if (x === null || x === undefined || x === "") return 1;
          if (y === null || y === undefined || y === "") return -1;
          return (typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y), undefined, {numeric: true})) * sort.dir;
        });
      }
      sorted.forEach(function (row) {
        body.appendChild(el("tr", {}, columns.map(function (col) {
          var content = col.cell ? col.cell(row) : value(col, row);
          return el("td", {"class": col.num ? "num" : col.nowrap ? "nowrap" : null}, [content === null || content === undefined ? "" :
            (typeof content === "object" ? content : String(content))]);
        })));
      });
    }
    render();
    return table;
  }

  function matchesText(row, keys, text) {
    if (!text) return true;
    text = text.toLowerCase();
    return keys.some(function (k) { return String(row[k] === null || row[k] === undefined ? "" : row[k]).toLowerCase().indexOf(text) >= 0; });
  }

  /* -- leaderboard ------------------------------------------------------------------------------ */
  function showLeaderboard(view) {
    var state = {text: "", breakdowns: false};
    var holder = el("div");
    var keys = ["scorer", "model", "pretrained", "benchmark", "subset", "metric", "run_id"];
    function draw() {
      var rows = R.leaderboard.filter(function (r) {
        return (state.breakdowns || r.subset.indexOf("=") < 0) && matchesText(r, keys, state.text);
      });
      clear(holder).appendChild(rows.length ? sortableTable([
        {key: "benchmark", label: "benchmark"}, {key: "subset", label: "subset"}, {key: "metric", label: "metric"},
        {key: "scorer", label: "scorer"}, {key: "model", label: "model"}, {key: "pretrained", label: "pretrained"},
        {key: "value", label: "value (%)", num: true, cell: function (r) { return fmt(r.value); }},
        {key: "ci_low", label: "95% interval", nowrap: true, cell: function (r) {
          return el("span", {}, [r.ci_low === null ? "" : "[" + fmt(r.ci_low) + ", " + fmt(r.ci_high) + "]", intervalBar(r.value, r.ci_low, r.ci_high)]);
        }},
        {key: "n", label: "n", num: true}, {key: "run_id", label: "run"}
      ], rows, {key: "benchmark", dir: 1}) : el("p", {text: "No rows (run `harness run ...`, or clear the filter)."}));
    }
    view.appendChild(el("div", {"class": "controls"}, [
      el("label", {}, ["filter ", el("input", {type: "search", id: "lb-filter", placeholder: "model, benchmark, metric...",
        oninput: function (e) { state.text = e.target.value; draw(); }})]),
      el("label", {}, [el("input", {type: "checkbox", id: "lb-breakdowns", onchange: function (e) { state.breakdowns = e.target.checked; draw(); }}),
        " breakdowns (field=value subsets)"]),
      el("span", {"class": "legend", text: "The newest run of each scorer, model, benchmark, subset and metric. Click a column to sort."})
    ]));
    view.appendChild(holder);
    draw();
  }

  /* -- comparisons ------------------------------------------------------------------------------ */
  function itemsLink(row, index, side, count) {
    if (count === null || count === undefined) return "";
    if (!count) return "0";
    var ids = side === "a" ? row.a_better : row.b_better;
    if (!ids || !hasBenchmark(row.benchmark)) return String(count);
    return el("a", {href: "#items/" + encodeURIComponent(row.benchmark) + "/cmp/" + index + "/" + side,
                    title: "show these items"}, [String(count)]);
  }
  function hasBenchmark(name) { return R.benchmarks.some(function (b) { return b.name === name; }); }

  function showComparisons(view) {
    var rows = R.comparisons.map(function (r, i) { r._index = i; return r; });
    if (!rows.length) {
      view.appendChild(el("p", {text: "No comparisons yet: `harness compare RUN_A RUN_B` (or SCORER:MODEL specs) appends them to comparisons.csv."}));
      return;
    }
    var state = {text: "", breakdowns: false};
    var holder = el("div");
    // one scale for every difference bar: the widest interval, at least 5 points
    var span = Math.max(5, Math.max.apply(null, rows.map(function (r) {
      return Math.max(Math.abs(r.diff_ci_low || 0), Math.abs(r.diff_ci_high || 0), Math.abs(r.difference || 0)); })));
    var keys = ["comparison_id", "benchmark", "subset", "metric", "model_a", "model_b", "run_a", "run_b"];
    function draw() {
      var shown = rows.filter(function (r) {
        return (state.breakdowns || String(r.subset).indexOf("=") < 0) && matchesText(r, keys, state.text);
      });
      clear(holder).appendChild(sortableTable([
        {key: "comparison_id", label: "comparison"}, {key: "benchmark", label: "benchmark"},
        {key: "subset", label: "subset"}, {key: "metric", label: "metric"},
        {key: "model_a", label: "A", cell: function (r) { return el("span", {title: "run " + r.run_a}, [r.model_a]); }},
        {key: "model_b", label: "B", cell: function (r) { return el("span", {title: "run " + r.run_b}, [r.model_b]); }},
        {key: "n", label: "n", num: true},
        {key: "value_a", label: "A (%)", num: true, cell: function (r) { return fmt(r.value_a); }},
        {key: "value_b", label: "B (%)", num: true, cell: function (r) { return fmt(r.value_b); }},
        {key: "difference", label: "B - A [95% paired CI]", nowrap: true, cell: function (r) {
          return el("span", {"class": r.difference > 0 ? "pos" : r.difference < 0 ? "neg" : null}, [
            signed(r.difference) + " [" + signed(r.diff_ci_low) + ", " + signed(r.diff_ci_high) + "]",
            intervalBar(r.difference, r.diff_ci_low, r.diff_ci_high, span)]);
        }},
        {key: "a_right_b_wrong", label: "A right, B wrong", num: true, cell: function (r) { return itemsLink(r, r._index, "a", r.a_right_b_wrong); }},
        {key: "a_wrong_b_right", label: "A wrong, B right", num: true, cell: function (r) { return itemsLink(r, r._index, "b", r.a_wrong_b_right); }},
        {key: "p_value", label: "p (McNemar)", num: true, cell: function (r) { return fmtP(r.p_value); }},
        {key: "p_holm", label: "p Holm", num: true, cell: function (r) { return fmtP(r.p_holm); }}
      ], shown, null));
    }
    view.appendChild(el("div", {"class": "controls"}, [
      el("label", {}, ["filter ", el("input", {type: "search", id: "cmp-filter", oninput: function (e) { state.text = e.target.value; draw(); }})]),
      el("label", {}, [el("input", {type: "checkbox", id: "cmp-breakdowns", onchange: function (e) { state.breakdowns = e.target.checked; draw(); }}),
        " breakdowns"]),
      el("span", {"class": "legend", text: "Paired over the items both runs scored. p: exact McNemar test on the discordant items; " +
        "p Holm: corrected over the runs compared with the same first run. Many rows and subsets are many tests: " +
        "a single small p among them is weak evidence. Click a count to see those items."})
    ]));
    view.appendChild(holder);
    draw();
  }

  /* -- item browser ----------------------------------------------------------------------------- */
  function loadItems(name, done) {
    window.HARNESS_ITEMS = window.HARNESS_ITEMS || {};
    if (window.HARNESS_ITEMS[name]) { done(window.HARNESS_ITEMS[name]); return; }
    var info = R.benchmarks.filter(function (b) { return b.name === name; })[0];
    if (!info) { done(null); return; }
    var script = el("script", {src: info.file});
    script.onload = function () { done(window.HARNESS_ITEMS[name] || null); };
    script.onerror = function () { done(null); };
    document.body.appendChild(script);
  }

  function stateFor(data) {
    if (!itemState[data.benchmark]) {
      var runs = data.runs.map(function (r) { return r.id; });
      itemState[data.benchmark] = {page: 0, size: 25, text: "", meta: {}, a: runs[0] || "", b: runs[1] || runs[0] || "",
        key: data.outcomes[0] || "", rel: "any", cmp: null, shown: runs.slice(0, 4)};
    }
    return itemState[data.benchmark];
  }

  function outcomeOf(item, data, runId, key) {
    var k = data.runs.map(function (r) { return r.id; }).indexOf(runId);
    var entry = k < 0 ? null : item.r[k];
    return entry && entry.o && key in entry.o ? entry.o[key] : null;
  }

  function filtered(data, state) {
    var text = state.text.toLowerCase();
    var only = state.cmp ? state.cmp.ids : null;
    return data.items.filter(function (item) {
      if (only && !only[item.id]) return false;
      for (var field in state.meta) {
        if (state.meta[field] && item.m[field] !== state.meta[field]) return false;
      }
      if (state.rel !== "any") {
        var a = outcomeOf(item, data, state.a, state.key), b = outcomeOf(item, data, state.b, state.key);
        if (a === null || b === null) return false;
        if (state.rel === "ab" && !(a && !b)) return false;
        if (state.rel === "ba" && !(!a && b)) return false;
        if (state.rel === "both" && !(a && b)) return false;
        if (state.rel === "neither" && !(!a && !b)) return false;
      }
      if (text) {
        var hay = [item.id].concat(item.t, Object.keys(item.m).map(function (k) { return item.m[k]; })).join(" \u0001 ").toLowerCase();
        if (hay.indexOf(text) < 0) return false;
      }
      return true;
    });
  }

  function select(id, options, current, onchange) {
    return el("select", {id: id, onchange: function (e) { onchange(e.target.value); }}, options.map(function (o) {
      return el("option", {value: o[0], selected: o[0] === current}, [o[1]]);
    }));
  }

  function matrixTable(item, entry, run) {
    var caption = el("caption", {}, [el("span", {title: "run " + run.id}, [run.label]), " "].concat(
      Object.keys(entry.o).map(function (k) { return el("span", {"class": "chip " + (entry.o[k] ? "right" : "wrong")}, [k + (entry.o[k] ? " \u2713" : " \u2717")]); }),
      entry.x ? Object.keys(entry.x).map(function (k) { return el("span", {"class": "chip"}, [k + ": " + entry.x[k]]); }) : []));
    var table = el("table", {"class": "matrix"}, [caption]);
    if (entry.s) {
      table.appendChild(el("tr", {}, [el("th")].concat(item.t.map(function (_, j) { return el("th", {title: item.t[j]}, ["t" + j]); }))));
      entry.s.forEach(function (row, i) {
        var truth = item.y[i], decided = entry.d[i];
        if (truth < 0) {  // NO_TEXT: no candidate describes this image (e.g. a negative image)
          table.appendChild(el("tr", {}, [el("th", {title: "no text belongs to this image"}, ["i" + i + " (none)"])].concat(
            row.map(function (v) { return el("td", {}, [String(v)]); }))));
          return;
        }
        var ok = decided === truth;
        var cells = [el("th", {"class": ok ? "right" : "wrong", title: decided < 0 ? "tie at the top: wrong" :
          "picks t" + decided + (ok ? " (right)" : " (wrong: t" + truth + " belongs to this image)")}, ["i" + i + (ok ? " \u2713" : " \u2717")])];
        row.forEach(function (v, j) {
          var cls = [];
          if (j === truth) cls.push("truth");
          if (j === decided) cls.push(ok ? "right" : "wrong");
          if (decided < 0 && v === Math.max.apply(null, row)) cls.push("wrong");
          cells.push(el("td", {"class": cls.join(" ") || null}, [String(v)]));
        });
        table.appendChild(el("tr", {}, cells));
      });
    } else if (entry.n) {
      table.appendChild(el("tr", {}, [el("td", {"class": "note"}, [entry.n])]));
    } else if (entry.b) {
      entry.b.forEach(function (best, i) {
        var truthText = item.tt ? item.tt[i] : null;
        table.appendChild(el("tr", {}, [el("th", {}, ["i" + i + " best 5"])].concat(best.map(function (pair, rank) {
          var cls = pair[0] === truthText ? (rank === 0 ? "truth right" : "truth") : (rank === 0 ? "wrong" : null);
          return el("td", {"class": cls, title: String(pair[1])}, [pair[0]]);
        }))));
      });
    }
    return table;
  }

  function card(item, data, state) {
    var pixel = item.im.some(function (im) { return im && Math.max(im[1], im[2]) <= 64; });
    var images = [];
    for (var i = 0; i < item.n; i++) {
      var im = item.im[i];
      images.push(el("figure", {}, [im ? el("img", {src: im[0], loading: "lazy", alt: "image " + i + " of " + item.id,
        "class": pixel ? "pixelated" : null, width: 96, height: 96}) : el("div", {"class": "noimage", text: "image not available"}), "i" + i]));
    }
    var truthOf = {};
    item.y.forEach(function (t, i) { (truthOf[t] = truthOf[t] || []).push("i" + i); });
    var texts = el("ol", {"class": "texts"}, item.t.map(function (t, j) {
      return el("li", {}, [el("span", {"class": "tag"}, ["t" + j]), t].concat(truthOf[j] ? [" ", el("span", {"class": "chip right"}, ["true for " + truthOf[j].join(", ")])] : []));
    }));
    var runs = el("div", {"class": "runs"});
    data.runs.forEach(function (run, k) {
      if (state.shown.indexOf(run.id) < 0 || !item.r[k]) return;
      runs.appendChild(matrixTable(item, item.r[k], run));
    });
    var chips = Object.keys(item.m).map(function (k) { return el("span", {"class": "chip"}, [k + ": " + item.m[k]]); });
    return el("article", {"class": "item", "data-id": item.id}, [
      el("header", {}, [el("code", {}, [item.id])].concat(chips)),
      el("div", {"class": "body"}, [el("div", {"class": "images"}, images), texts]),
      runs
    ]);
  }

  function showItems(view, name, cmpIndex, side) {
    view.appendChild(el("p", {"class": "quiet", text: "Loading the items of " + name + "..."}));
    loadItems(name, function (data) {
      clear(view);
      if (!data) {
        view.appendChild(el("p", {"class": "note", text: "No item data for " + name + "."}));
        return;
      }
      var state = stateFor(data);
      if (cmpIndex !== null) {
        var row = R.comparisons[cmpIndex];
        var list = row ? (side === "a" ? row.a_better : row.b_better) : null;
        if (list) {
          var ids = {}, units = false;
          list.forEach(function (id) {
            ids[id] = true;
            // a unit that is not one item: several items ("a+b", a pair) or a part of one ("a|caption 2")
            if (/[+|]/.test(id)) units = true;
            id.split("+").forEach(function (piece) { ids[piece.split("|")[0]] = true; });
          });
          state.cmp = {row: row, side: side, ids: ids, count: list.length, units: units};
          state.a = row.run_a; state.b = row.run_b; state.rel = "any"; state.page = 0;
          // the outcome the row's metric is about, where the items record it under that name
          if (data.outcomes.indexOf(row.metric) >= 0) state.key = row.metric;
          else if (data.outcomes.indexOf("correct") >= 0) state.key = "correct";
          state.shown = [row.run_a, row.run_b].filter(function (id, i, all) { return all.indexOf(id) === i; });
        }
      } else {
        state.cmp = null;
      }
      renderItems(view, data, state);
    });
  }

  function renderItems(view, data, state) {
    clear(view);
    view.appendChild(el("h2", {}, ["Items of " + data.benchmark + " ", el("span", {"class": "quiet"}, [
      data.items.length + " items, " + data.runs.length + " run(s)"])]));
    data.notes.forEach(function (n) { view.appendChild(el("p", {"class": "note", text: n})); });
    var list = el("div", {"class": "items", id: "item-list"});
    var pagerTop = el("div", {"class": "pager"}), pagerBottom = el("div", {"class": "pager"});
    var runOptions = data.runs.map(function (r) { return [r.id, r.label + " (" + r.id + ")"]; });

    function redraw() { renderItems(view, data, state); }
    var controls = el("div", {"class": "controls", id: "item-controls"});
    Object.keys(data.filters).forEach(function (field) {
      controls.appendChild(el("label", {}, [field + " ", select("filter-" + field, [["", "(all)"]].concat(
        data.filters[field].map(function (v) { return [v, v]; })), state.meta[field] || "", function (v) {
        state.meta[field] = v; state.page = 0; redraw(); })]));
    });
    controls.appendChild(el("label", {}, ["search ", el("input", {type: "search", id: "item-search", value: state.text,
      placeholder: "id, caption, tag", onchange: function (e) { state.text = e.target.value; state.page = 0; redraw(); }})]));
    if (data.runs.length && data.outcomes.length) {
      controls.appendChild(el("label", {}, ["A ", select("run-a", runOptions, state.a, function (v) { state.a = v; state.page = 0; redraw(); })]));
      controls.appendChild(el("label", {}, ["B ", select("run-b", runOptions, state.b, function (v) { state.b = v; state.page = 0; redraw(); })]));
      controls.appendChild(el("label", {}, ["on ", select("outcome-key", data.outcomes.map(function (k) { return [k, k]; }), state.key,
        function (v) { state.key = v; state.page = 0; redraw(); })]));
      controls.appendChild(el("label", {}, ["show ", select("relation", RELATIONS, state.rel, function (v) { state.rel = v; state.page = 0; redraw(); })]));
    }
    view.appendChild(controls);
    if (data.runs.length) {
      var pick = el("div", {"class": "runpick"}, [el("span", {"class": "legend", text: "score matrices of:"})]);
      data.runs.forEach(function (r) {
        pick.appendChild(el("label", {}, [el("input", {type: "checkbox", checked: state.shown.indexOf(r.id) >= 0, onchange: function (e) {
          if (e.target.checked) state.shown.push(r.id); else state.shown = state.shown.filter(function (x) { return x !== r.id; });
          redraw();
        }}), " " + r.label]));
      });
      view.appendChild(pick);
    }
    if (state.cmp) {
      var c = state.cmp.row;
      view.appendChild(el("div", {"class": "banner", id: "cmp-banner"}, [
        "Comparison " + c.comparison_id + ", " + c.subset + " / " + c.metric + ": the " + state.cmp.count +
        (state.cmp.units ? " unit(s) (pairs, sets or queries; their items below)" : " item(s)") + " where " +
        (state.cmp.side === "a" ? "A (" + c.model_a + ") is right and B (" + c.model_b + ") wrong" :
                                  "B (" + c.model_b + ") is right and A (" + c.model_a + ") wrong") + ". ",
        el("a", {href: "#items/" + encodeURIComponent(data.benchmark)}, ["show all items"])]));
    }
    view.appendChild(el("p", {"class": "legend", text: "Each matrix: rows are images (i), columns texts (t); the outlined cell is the " +
      "text that belongs to the image; the coloured cell is the text the run picks for it (green right, red wrong; a tie at the top is wrong)."}));
    var shown = filtered(data, state);
    var pages = Math.max(1, Math.ceil(shown.length / state.size));
    state.page = clamp(state.page, 0, pages - 1);
    var start = state.page * state.size, page = shown.slice(start, start + state.size);
    [pagerTop, pagerBottom].forEach(function (pager) {
      pager.appendChild(el("button", {type: "button", disabled: state.page === 0, "class": "prev", onclick: function () { state.page--; redraw(); }}, ["\u2190 previous"]));
      pager.appendChild(el("span", {"class": "count", text: shown.length ? "items " + (start + 1) + "\u2013" + (start + page.length) + " of " + shown.length +
        (shown.length < data.items.length ? " (filtered from " + data.items.length + ")" : "") + ", page " + (state.page + 1) + " of " + pages : "no item matches"}));
      pager.appendChild(el("button", {type: "button", disabled: state.page >= pages - 1, "class": "next", onclick: function () { state.page++; redraw(); }}, ["next \u2192"]));
      pager.appendChild(el("label", {}, ["per page ", select(null, PAGE_SIZES.map(function (s) { return [String(s), String(s)]; }), String(state.size),
        function (v) { state.size = Number(v); state.page = 0; redraw(); })]));
    });
    view.appendChild(pagerTop);
    page.forEach(function (item) { list.appendChild(card(item, data, state)); });
    view.appendChild(list);
    view.appendChild(pagerBottom);
  }

  /* -- figures and routing ---------------------------------------------------------------------- */
  function showFigures(view) {
    if (!R.figures.length) { view.appendChild(el("p", {text: "No figures (no results yet)."})); return; }
    var box = el("div", {"class": "figures"});
    R.figures.forEach(function (f) { box.appendChild(el("h2", {text: f.title})); box.appendChild(el("img", {src: f.file, alt: f.title, loading: "lazy"})); });
    view.appendChild(box);
  }

  function tabs(active) {
    var nav = clear(document.getElementById("tabs"));
    var entries = [["#leaderboard", "Leaderboard", "leaderboard"], ["#comparisons", "Comparisons (" + R.comparisons.length + ")", "comparisons"]];
    R.benchmarks.forEach(function (b) { entries.push(["#items/" + encodeURIComponent(b.name), "Items: " + b.name, "items/" + b.name]); });
    entries.push(["#figures", "Figures", "figures"]);
    entries.forEach(function (e) { nav.appendChild(el("a", {href: e[0], "class": e[2] === active ? "active" : null}, [e[1]])); });
  }

  function route() {
    var hash = decodeURIComponent(location.hash.replace(/^#/, "")) || "leaderboard";
    var parts = hash.split("/");
    var views = ["leaderboard", "comparisons", "items", "figures"];
    var which = views.indexOf(parts[0]) >= 0 ? parts[0] : "leaderboard";
    views.forEach(function (v) { document.getElementById("view-" + v).hidden = v !== which; });
    var view = clear(document.getElementById("view-" + which));
    if (which === "items") {
      var name = parts[1] || (R.benchmarks[0] ? R.benchmarks[0].name : "");
      tabs("items/" + name);
      var cmp = parts[2] === "cmp" ? Number(parts[3]) : null;
      showItems(view, name, cmp === null || isNaN(cmp) ? null : cmp, parts[4] === "b" ? "b" : "a");
      return;
    }
    tabs(which);
    if (which === "leaderboard") showLeaderboard(view);
    else if (which === "comparisons") showComparisons(view);
    else showFigures(view);
  }

  if (!R) {
    document.body.appendChild(el("p", {"class": "note", text: "data/index.js is missing: rerun `harness report`."}));
    return;
  }
  document.getElementById("title").textContent = R.title;
  document.getElementById("generated").textContent = "Written by `harness report` on " + R.generated +
    ". Values are percentages with 95% bootstrap intervals over items.";
  var notes = document.getElementById("notes");
  R.notes.forEach(function (n) { notes.appendChild(el("p", {"class": "note", text: n})); });
  window.addEventListener("hashchange", route);
  route();
})();
