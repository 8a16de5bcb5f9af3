// The submit pattern every form and action button of the console shares:
// the button is disabled while its call is in flight (a double click acts
// once), a status area shows the failure (errorView), and each field
// violation, the server's or one found reading the inputs (InvalidInput),
// is shown next to its field (`data-path`, see errors.ts).
import { h, replace } from "./dom";
import { errorView, fieldViolations, showViolations } from "./errors";
import { InvalidInput } from "./parse";

export interface FormParts {
  /** `<name>-submit`, disabled while the action runs. */
  submit: HTMLButtonElement;
  /** `<name>-status`, where a failure shows. */
  status: HTMLElement;
  /** For the form's `onsubmit`. */
  onsubmit: (event: SubmitEvent) => Promise<void>;
}

/** A form's submit button, status area and submit handler running `action`. */
export function formAction(name: string, label: string, action: (form: HTMLFormElement) => Promise<void>): FormParts {
  const status = h("div", { class: "status", testid: `${name}-status` });
  const submit = h("button", { type: "submit", testid: `${name}-submit` }, label);
  async function onsubmit(event: SubmitEvent): Promise<void> {
    event.preventDefault();
    const form = event.currentTarget as HTMLFormElement;
    await runAction(submit, status, () => action(form), form);
  }
  return { submit, status, onsubmit };
}

/** Runs `action` with `button` disabled, one run at a time (a click while
 * it runs does nothing). A failure shows in `status`, and its field
 * violations next to their fields inside `fields`. True on success. */
export async function runAction(
  button: HTMLButtonElement,
  status: HTMLElement,
  action: () => Promise<void>,
  fields?: ParentNode,
): Promise<boolean> {
  if (button.disabled) return false;
  button.disabled = true;
  replace(status);
  if (fields) showViolations(fields, []);
  try {
    await action();
    return true;
  } catch (err) {
    if (err instanceof InvalidInput) {
      if (fields) showViolations(fields, err.violations);
      replace(
        status,
        h(
          "div",
          { class: "error", role: "alert", testid: "input-error" },
          "Nothing was sent: ",
          err.violations.map((v) => `${v.field} ${v.description}`).join("; "),
          ".",
        ),
      );
    } else {
      if (fields) showViolations(fields, fieldViolations(err));
      replace(status, errorView(err));
    }
    return false;
  } finally {
    button.disabled = false;
  }
}

/** A labelled control whose violations (field `path` of the request, and
 * the paths inside it) show next to it. */
export function labeled(label: string, path: string, control: HTMLElement): HTMLLabelElement {
  return h("label", { "data-path": path }, label, control);
}
