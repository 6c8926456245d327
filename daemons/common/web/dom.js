// thingsync's pages: building the DOM. Text goes in as textContent only, so
// nothing a peer or a source sends is ever parsed as HTML.
// SPDX-License-Identifier: MIT
'use strict';

const DOM = {
  $: (sel, root) => (root || document).querySelector(sel),

  // el('tr', {class, text, 'data-x': 1, onclick: fn}, child, ...)
  el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of kids) if (c !== null && c !== undefined) e.append(c);
    return e;
  },

  svg(tag, attrs, text) {
    const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  },
};
