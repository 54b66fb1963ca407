// The `translate` service of the designer and the DMN editor, in the user's language.
//
// bpmn-js, dmn-js and the properties panel pass every text of their own (palette, context
// pad, replace menu, panel labels, table editor labels, ID validation messages) through the
// diagram-js `translate` service. This module replaces that service: for zh_CN, the default,
// it looks the English template up in locale/zh_CN.json; for English it leaves the template
// as it is. A template missing from the dictionary is shown in English.
import zhCN from './locale/zh_CN.json';

export const DEFAULT_LOCALE = 'zh_CN';
const DICTIONARIES = { zh_CN: zhCN, en: {} };

// The locale the page passes in data-locale, or zh_CN when it names no supported language.
export function pageLocale(element) {
  const locale = element.dataset.locale;
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
