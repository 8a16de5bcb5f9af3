// A tiny element builder, so pages read as a tree of elements without a
// framework: h("p", { testid: "x", class: "y" }, "text", child).
//
// Attributes: `testid` becomes data-testid; `on<event>` adds a listener;
// `true` sets a boolean attribute, `false`/`undefined` leaves it out;
// `value` is set as a property (it is live state on inputs).

export type Child = Node | string | number | null | undefined | false | Child[];

type AttrValue = string | number | boolean | undefined | ((event: any) => void);
export type Attrs = Record<string, AttrValue>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    if (typeof value === "function") {
      el.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "testid") {
      el.dataset.testid = String(value);
    } else if (name === "value") {
      (el as HTMLInputElement).value = String(value);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

/** Appends children, flattening arrays and skipping empty ones. */
export function append(parent: Node, children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(parent, child);
    else parent.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
  }
}

/** Replaces everything inside `parent` with `children`. */
export function replace(parent: Node, ...children: Child[]): void {
  parent.textContent = "";
  append(parent, children);
}

/** The value of a named control of a form, as typed. */
export function field(form: HTMLFormElement, name: string): string {
  const control = form.elements.namedItem(name);
  return control && "value" in control ? String(control.value) : "";
}
