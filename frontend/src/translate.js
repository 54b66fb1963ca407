// The `translate` service of the designer and the DMN editor, in the user's language.
//
// bpmn-js, dmn-js and the properties panel pass their texts (palette, context pad, replace
// menu, panel labels, table editor labels, ID validation messages) through the diagram-js
// `translate` service, and Heatflow's own page scripts use the same function.
// Library texts are English templates and Heatflow's are Chinese, so each locale has one
// dictionary: locale/zh_CN.json turns the library's English into Chinese (zh_CN, the
// default), and locale/en.json turns Heatflow's Chinese into English. A template missing
// from the dictionary is shown as it is.
import en from './locale/en.json';
import zhCN from './locale/zh_CN.json';

export const DEFAULT_LOCALE = 'zh_CN';
const DICTIONARIES = { zh_CN: zhCN, en };

// The locale the page passes in data-locale, or zh_CN when `element` is missing or names no supported language.
export function pageLocale(element) {
  const locale = element ? element.dataset.locale : undefined;
  return Object.prototype.hasOwnProperty.call(DICTIONARIES, locale) ? locale : DEFAULT_LOCALE;
}

export function translator(locale) {
  const dictionary = DICTIONARIES[locale] || DICTIONARIES[DEFAULT_LOCALE];
  return function translate(template, replacements) {
    const text = Object.prototype.hasOwnProperty.call(dictionary, template) ? dictionary[template] : template;
    return text.replace(/{([^}]+)}/g, (placeholder, key) => (
      replacements && replacements[key] !== undefined ? String(replacements[key]) : placeholder
    ));
  };
}

// A module for a modeler's additionalModules that replaces diagram-js' `translate`.
export function translateModule(locale) {
  return { translate: ['value', translator(locale)] };
}
